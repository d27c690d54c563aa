"""Screenshots of the report and the live viewer for the README (docs/figures/report.png, viewer.png).

    python benchmarks/screenshots.py RUN --attributes ATTFIND_DIR --out docs/figures

Writes the report into a scratch folder (the run folder is only read), opens it in Debian's chromium through
Playwright (`apt-get install -y chromium`; never `playwright install`), moves the first attribute's slider to
its end and takes the report's screenshot; then serves the viewer on a free loopback port, moves two sliders and
takes the viewer's.
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

from stylex.errors import StylexError
from stylex.scripting import ScriptParser, script_main

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


def main() -> None:
    parser = ScriptParser(description=__doc__)
    parser.add_argument("run", type=Path, help="run folder")
    parser.add_argument("--attributes", type=Path, help="stylex attfind output folder (default RUN/attfind)")
    parser.add_argument(
        "--out", type=Path, default=REPO / "docs" / "figures", help="replaces report.png and viewer.png"
    )
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--viewer-image", type=int, default=0, help="which of the offered images the viewer shows")
    parser.add_argument("--viewer-toward", type=int, default=0, help="class the viewer's sliders push toward")
    parser.add_argument("--viewer-sliders", type=int, default=4, help="how many sliders may be moved")
    args = parser.parse_args()
    attributes = args.attributes or args.run / "attfind"
    if not (attributes / "attributes.json").is_file():
        raise StylexError(f"no AttFind results in {attributes}; run `stylex attfind --model {args.run}` first.")
    if not Path(args.chromium).is_file():
        raise StylexError(f"no Chromium at {args.chromium}; install Debian's chromium or pass --chromium PATH.")

    from playwright.sync_api import sync_playwright

    from stylex.explain.report import write_report
    from stylex.explain.viewer import load_viewer, make_server

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        index = write_report(args.run, Path(tmp) / "report", args.attributes, quiet=True)
        browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)

        page = browser.new_page(viewport={"width": 1280, "height": 1500})
        page.goto(index.as_uri())
        page.wait_for_load_state("load")
        slider = page.locator("input.frames").first
        slider.focus()
        page.keyboard.press("End")
        page.locator("#attributes").scroll_into_view_if_needed()
        page.evaluate("() => document.getElementById('attributes').scrollIntoView()")
        page.wait_for_timeout(500)
        page.screenshot(path=str(args.out / "report.png"))
        page.close()

        server = make_server(load_viewer(args.run, args.attributes, num_images=12), "127.0.0.1", 0, quiet=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.goto(f"http://127.0.0.1:{server.server_address[1]}/")
        page.wait_for_function("() => document.body.dataset.renders === '1'")
        page.locator("#thumbs button").nth(args.viewer_image).click()
        page.wait_for_function("() => document.body.dataset.renders === '2'")
        viewer = server.viewer
        target = viewer.names[args.viewer_toward]
        for i, slider in enumerate(viewer.sliders[: args.viewer_sliders]):  # each toward the end that raises target
            key = "End" if target in slider.raises_max else "Home" if target in slider.raises_min else None
            if key:
                page.locator("#sliders input[type=range]").nth(i).focus()
                page.keyboard.press(key)
        page.wait_for_timeout(1500)
        page.evaluate("() => window.scrollTo(0, 0)")
        page.screenshot(path=str(args.out / "viewer.png"))
        server.shutdown()
        browser.close()
    print(f"wrote {args.out / 'report.png'} and {args.out / 'viewer.png'}")


if __name__ == "__main__":
    script_main(main)
