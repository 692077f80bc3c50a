"""A view that wedges its worker: a regular expression with catastrophic backtracking
holds the GIL for hours, so no other thread of that process runs again.  Used to
see whether a WSGI server notices and replaces such a worker (benchmarks/README.md)."""

import re

from flask import Flask

app = Flask(__name__)


@app.get("/")
def index() -> str:
    return "ok"


@app.get("/hang")
def hang() -> str:
    re.match(r"(a+)+$", "a" * 64 + "b")
    return "never"
