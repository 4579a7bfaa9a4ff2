"""The peer baseline of `benchmarks load`: a minimal WeRoBot echo robot.

    python -m benchmarks.werobot_echo --port PORT --token TOKEN

WeRoBot as its documentation shows it: `WeRoBot(token=...)`, one text handler that echoes
the message and takes the session (so WeRoBot's default session store, SQLite in the
working directory, is read and written for every message), served by `robot.run()` with
its default server ("auto": Bottle picks the first WSGI server it can import, the standard
library's wsgiref when no other is installed).  Run it in a scratch working directory.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the echo robot on 127.0.0.1 until killed."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.werobot_echo")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", required=True)
    args = parser.parse_args(argv)

    import werobot

    robot = werobot.WeRoBot(token=args.token)

    @robot.text
    def echo(message: Any, session: Any) -> str:
        """Answer a text with itself; taking `session` makes WeRoBot load and store it."""
        session["count"] = session.get("count", 0) + 1
        return str(message.content)

    robot.run(host="127.0.0.1", port=args.port, enable_pretty_logging=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
