"""The smallest Flask app: what a WSGI server costs by itself."""

from flask import Flask

app = Flask(__name__)


@app.get("/")
def index() -> str:
    return "ok"
