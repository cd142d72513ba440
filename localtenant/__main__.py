"""`python -m localtenant --state .local/tenant.sqlite --base-port 47400`: runs in the foreground with
SQLite state and fixed ports, and writes ca.pem and tenant.json beside the state file."""
from __future__ import annotations

import argparse
import signal
import sys
import threading

from .tenant import ORIGINS, LocalTenant


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localtenant", description=__doc__)
    parser.add_argument("--state", default=".local/tenant.sqlite", help="SQLite state file")
    parser.add_argument("--base-port", type=int, default=47400, help="origins use base+1 .. base+7")
    parser.add_argument("--host", default="127.0.0.1", help="a loopback address")
    parser.add_argument("--bare", action="store_true",
                        help="grant the product nothing and make no API registration (for registrations.setup)")
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        lt = LocalTenant.start(args.state, base_port=args.base_port, host=args.host, bare=args.bare)
    except ValueError as error:  # a non-loopback host, or a state file started the other way
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        endpoints = [lt.authority_host, lt.graph_endpoint, lt.vault_url, lt.arm_endpoint, lt.identity_endpoint,
                     lt.dicom_url, lt.dicom_oss_url]
        for name, url in zip(ORIGINS, endpoints):
            print(f"{name:9} {url}", flush=True)
        print(f"tenant    {lt.tenant_id}\nCA file   {lt.ca_file}\nready; Ctrl-C stops", flush=True)
        stop.wait()
    finally:
        lt.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
