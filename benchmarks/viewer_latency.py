"""Viewer latency: sequential renders on one keep-alive connection, as a browser sends them when a slider moves.

Usage:
    python benchmarks/viewer_latency.py --model RUN [--attributes DIR] [--renders 200] [--rounds 3]

Serves the run's viewer in this process twice, on the same model and images, with the handler's Nagle setting
as shipped (`disable_nagle_algorithm = True`: headers and body leave at once) and with Nagle on (the standard
library's default), in alternating rounds. Prints per setting the median milliseconds per render (wall clock)
and the ratio. The renders themselves are the same work in both; what differs is how long each reply waits on
the socket. Session 20 measured it after a load test found 2,000 renders taking 97 s on one connection.
"""

from __future__ import annotations

import http.client
import json
import random
import statistics
import threading
import time

from stylex.explain import viewer as viewer_module
from stylex.explain.viewer import load_viewer, make_server
from stylex.scripting import ScriptParser, script_main


def ms_per_render(viewer, nagle_off: bool, renders: int, seed: int) -> float:
    """Median milliseconds per render over `renders` requests on one connection."""
    viewer_module._Handler.disable_nagle_algorithm = nagle_off
    server = make_server(viewer, "127.0.0.1", 0, quiet=True, token=None)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    rng = random.Random(seed)
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=60)
    times = []
    try:
        image = viewer.info()["images"][0]["id"]
        for _ in range(renders):
            values = {str(i): rng.uniform(-1, 1) for i in range(len(viewer.sliders))}
            body = json.dumps({"image": image, "values": values})
            t = time.perf_counter()
            conn.request("POST", "/api/render", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            times.append(time.perf_counter() - t)
            assert response.status == 200, response.status
    finally:
        conn.close()
        server.shutdown()
        server.server_close()
        viewer_module._Handler.disable_nagle_algorithm = True
    return 1000 * statistics.median(times)


def main() -> None:
    parser = ScriptParser(description=__doc__)
    parser.add_argument("--model", required=True, help="A run (or exported model) with AttFind results.")
    parser.add_argument("--attributes", help="The AttFind folder (default MODEL/attfind).")
    parser.add_argument("--renders", type=int, default=200, help="Renders per round and setting.")
    parser.add_argument("--rounds", type=int, default=3, help="Alternating rounds of both settings.")
    args = parser.parse_args()
    viewer = load_viewer(args.model, args.attributes, num_images=1)
    results: dict[bool, list[float]] = {True: [], False: []}
    for r in range(args.rounds):
        for nagle_off in (True, False):
            results[nagle_off].append(ms_per_render(viewer, nagle_off, args.renders, seed=r))
    shipped, nagle = statistics.median(results[True]), statistics.median(results[False])
    print(f"| setting | ms per render (median of {args.rounds} rounds x {args.renders} renders) |")
    print("|---|---|")
    print(f"| shipped (Nagle off) | {shipped:.2f} |")
    print(f"| Nagle on (http.server's default) | {nagle:.2f} |")
    print(f"\nNagle on / shipped: {nagle / shipped:.1f}x")


if __name__ == "__main__":
    script_main(main)
