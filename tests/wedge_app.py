"""A WSGI app with a route that wedges its worker (the GIL held for hours), started
the way sso.wsgi starts a worker under granian: with sso.watchdog from the environment."""

import os
import re

from flask import Flask

from sso import watchdog

watchdog.start(float(os.environ.get(watchdog.ENV) or 0))
app = Flask(__name__)


@app.get("/")
def index() -> str:
    return f"ok {os.getpid()}"


@app.get("/hang")
def hang() -> str:
    re.match(r"(a+)+$", "a" * 64 + "b")  # catastrophic backtracking: never returns
    return "never"
