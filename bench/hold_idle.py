#!/usr/bin/env python3
"""bench/hold_idle.py: hold N greeted, idle sessions open from a chosen source
address (e.g. 127.0.0.2), so that a load generator on 127.0.0.1 does not share
the ephemeral-port search with them (see docs/PERFORMANCE.md, "Descriptors").

Connects N times, reads each greeting up to the main menu's `__type__` line,
holds the sockets for --secs, then prints one JSON line: asked, held, still
open at the end, and the first errors. Bounded: every socket has a timeout,
the opening phase stops after --open-secs, the hold after --secs.
"""
import argparse
import json
import socket
import time

IP_BIND_ADDRESS_NO_PORT = 24  # Linux: pick the port at connect, by 4-tuple


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--addr", required=True, help="server HOST:PORT")
    p.add_argument("--source", default="127.0.0.2", help="local address to connect from")
    p.add_argument("--hold", type=int, required=True, help="sessions to open and hold")
    p.add_argument("--secs", type=float, default=20.0, help="seconds to hold them")
    p.add_argument("--open-secs", type=float, default=90.0, help="limit for opening them")
    a = p.parse_args()
    host, port = a.addr.rsplit(":", 1)
    held, errors = [], []
    limit = time.monotonic() + a.open_secs
    for i in range(a.hold):
        if time.monotonic() >= limit:
            errors.append(f"gave up after {i} of {a.hold}")
            break
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            s.bind((a.source, 0))
            s.settimeout(10)
            s.connect((host, int(port)))
            got = b""
            while b"__type__" not in got and len(got) < 4096:
                chunk = s.recv(4096)
                if not chunk:
                    raise ConnectionError(f"closed after {got[:80]!r}")
                got += chunk
            held.append(s)
        except (OSError, ConnectionError) as e:
            s.close()
            if len(errors) < 3:
                errors.append(f"#{i}: {e}")
    print(json.dumps({"event": "held", "held": len(held)}), flush=True)
    time.sleep(a.secs)
    still = 0
    for s in held:
        try:
            s.setblocking(False)
            data = s.recv(1, socket.MSG_PEEK)
            still += 1 if data else 0
        except BlockingIOError:
            still += 1
        except OSError:
            pass
        s.close()
    print(json.dumps({"asked": a.hold, "held": len(held), "still_open": still, "errors": errors}))
    return 0 if len(held) == a.hold and still == len(held) else 1


if __name__ == "__main__":
    raise SystemExit(main())
