"""Report, viewer and Python API on a tiny run whose first class is named `<img src=x onerror=alert(1)>`.

Browser tests drive Debian's chromium through Playwright (`.ci/run` installs both); they skip with the reason
when either is missing. Never `playwright install`: it downloads a browser build, which these machines cannot.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import pytest

from conftest import make_tiny_run, run_cli

EVIL = "<img src=x onerror=alert(1)>"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


run = run_cli


@pytest.fixture(scope="module")
def evil_run(tmp_path_factory):
    """Two classes, the first named EVIL, in an image folder -> classifier -> tiny StylEx -> AttFind -> report."""
    root = tmp_path_factory.mktemp("report")
    run("data", "synth", "--out", root / "synth", "--num-images", 24, "--resolution", 16, "--quiet")
    classes = sorted(p for p in (root / "synth").iterdir() if p.is_dir())
    for folder, name in zip(classes, [EVIL, "circle & co"], strict=True):
        shutil.copytree(folder, root / "data" / name)
    make_tiny_run(root, steps=2, data=root / "data")
    run("attfind", "--model", root / "run", "--num-images", 6, "--top-k", 2, "--fast", 8, "--max-batch", 64, "--quiet")
    result = run("report", root / "run", "--out", root / "report", "--top-k", 2, "--slider-images", 2,
                 "--frames", 3, "--explanations", 2, "--quiet")  # fmt: skip
    assert "report:" in result.output and "index.html" in result.output
    return root


# ------------------------------------------------------------------------------------------------ report files
def _local_refs(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="(?!data:)([^"#][^"]*)"', html)


def test_report_is_self_contained_and_escaped(evil_run):
    report = evil_run / "report"
    html = (report / "index.html").read_text()
    assert EVIL not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "circle &amp; co" in html
    metrics = json.loads((evil_run / "clf" / "metrics.json").read_text())
    judged = metrics["val_balanced_accuracy"]  # the mean over classes: chance 0.5 however unbalanced
    assert "; chance 0.500" in html and ("nearer chance (0.500 for 2 classes)" in html) == (judged < 0.75)
    # the classifier's figure is of its own data; the one `stylex train` measured on this run's is shown beside it
    own = json.loads((evil_run / "run" / "config.json").read_text())["classifier_accuracy"]
    assert f'<div class="cv">{own["accuracy"]:.3f}</div><div class="cl">accuracy on this data</div>' in html
    # the classifier records its own data, which "How this run was made" names (it assumed the run's)
    recorded = json.loads((evil_run / "clf" / "config.json").read_text())["data"]
    assert recorded == str((evil_run / "data").resolve()) and f"stylex train-classifier --data {recorded} " in html
    figures = next(p for p in (report / "reconstruct" / "reconstruction.json",
                               evil_run / "run" / "reconstruct" / "reconstruction.json") if p.is_file())  # fmt: skip
    rec = json.loads(figures.read_text())
    worse = rec["stylex"]["consistency"] < rec["class_median"]["consistency"]
    assert ("than the median image of each class does" in html) == worse
    refs = _local_refs(html)
    assert refs, "the report shows pictures"
    for ref in refs:
        assert not re.match(r"^[a-z]+:", ref), f"no network or absolute references: {ref}"
        assert (report / ref).is_file(), ref
    # files are named by class index, never by a class name
    folders = {p.name for p in (report / "img").iterdir() if p.is_dir()}
    assert folders <= {"c0", "c1", "explain"} and "explain" in folders and folders & {"c0", "c1"}, folders
    assert "Content-Security-Policy" in html and "script-src &#x27;sha256-" in html
    for section in ("Data and classifier", "Training", "Reconstructions", "Sufficiency@2", "How this run was made"):
        assert section in html
    assert "stylex train " in html and "stylex attfind " in html
    assert "<h1>StylEx report: run</h1>" in html and "stylex export" not in html  # an ordinary run folder
    assert not (evil_run / "run" / "report").exists(), "the run folder is only read"


def test_report_says_when_the_drop_out_was_spent(evil_run, tmp_path):
    folder = tmp_path / "attfind"
    shutil.copytree(evil_run / "run" / "attfind", folder)
    d = json.loads((folder / "attributes.json").read_text())
    assert all(0 not in c["counting"] for c in d["classes"])  # the tiny run's search never spends the drop-out
    assert "drop-out" not in (evil_run / "report" / "index.html").read_text()
    c = next(c for c in d["classes"] if len(c["attributes"]) == 2)
    c["counting"] = [c["num_images"], 0]
    (folder / "attributes.json").write_text(json.dumps(d))
    run("report", evil_run / "run", "--out", tmp_path / "r", "--attributes", folder, "--top-k", 1,
        "--slider-images", 1, "--frames", 3, "--explanations", 0, "--quiet")  # fmt: skip
    html = (tmp_path / "r" / "index.html").read_text()
    assert "--top-k 1 --slider-images 1 --frames 3 --explanations 0</pre>" in html or (
        "--top-k 1 --slider-images 1 --frames 3 --explanations 0\n" in html
    ), "the report's own command, whole"
    assert "Top row: training images; middle: their reconstructions" in html  # the sample grid's rows, named
    assert html.count(f"drop-out threshold (1.0) by rank 2, so rank 2 is ranked by the mean effect over all "
                      f"{c['num_images']} images") == 1  # fmt: skip
    for c in d["classes"]:  # classes without attributes, with and without images to move toward them
        c["attributes"], c["num_images"] = [], 3 * c["class_index"]
        for key in ("counting", "stability", "resampled_ranks"):  # one per attribute
            c[key] = [] if c.get(key) is not None else None
    (folder / "attributes.json").write_text(json.dumps(d))
    run("report", evil_run / "run", "--out", tmp_path / "r", "--attributes", folder, "--explanations", 0, "--quiet")
    html = (tmp_path / "r" / "index.html").read_text()
    assert "No attributes: every image was predicted as it already." in html
    assert "No attributes: none found from the 3 images not predicted as it." in html


def test_report_on_other_data_names_both(evil_run, tmp_path):
    run("report", evil_run / "run", "--out", tmp_path / "r", "--data", evil_run / "synth", "--no-generate", "--quiet")
    html = (tmp_path / "r" / "index.html").read_text()
    own = json.loads((evil_run / "run" / "config.json").read_text())["data"]
    assert f"<th>training data</th><td>{own}</td>" in html
    assert f"<th>images shown here</th><td>{evil_run / 'synth'}</td>" in html


@pytest.mark.slow
def test_a_many_class_report_links_each_class(tmp_path):
    """The shipped 10-class digits model: a link to each class section (the page is long), every link resolves."""
    run("attfind", "--model", "zoo:digits-32", "--out", tmp_path / "af", "--num-images", 10, "--top-k", 1, "--fast",
        4, "--no-render", "--resamples", 0, "--quiet")  # fmt: skip
    run("report", "zoo:digits-32", "--attributes", tmp_path / "af", "--out", tmp_path / "r", "--no-generate",
        "--quiet")  # fmt: skip
    html = (tmp_path / "r" / "index.html").read_text()
    links = re.findall(r'<a href="#(class-\d+)">', html)
    assert links == [f"class-{k}" for k in range(10)] and all(f'id="{a}"' in html for a in links)
    assert f"stylex report zoo:digits-32 --out {tmp_path / 'r'} --attributes {tmp_path / 'af'} --no-generate" in html


def test_report_replaces_its_own_folder_only(evil_run, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    result = run("report", evil_run / "run", "--out", foreign, "--quiet", ok=False)
    assert result.exit_code == 1 and result.output.startswith("error: ") and "not a stylex report" in result.output
    assert (foreign / "notes.txt").read_text() == "keep me"
    over = run("report", evil_run / "run", "--out", evil_run / "run", "--quiet", ok=False)
    assert over.exit_code == 1 and "replace the run folder" in over.output
    # a folder named like the report's temporary one was deleted unasked (it was a fixed OUT.partial); the report is
    # now written aside under a hidden name of its own process, and a killed report's is swept by the next one
    (tmp_path / "notes.partial").mkdir()
    (tmp_path / "notes.partial" / "thesis.txt").write_text("precious")
    killed = tmp_path / f".notes.tmp-{_host()}~{2**22 + 7}-abc"  # no such process
    (killed / "img").mkdir(parents=True)
    run("report", evil_run / "run", "--out", tmp_path / "notes", "--top-k", 1, "--explanations", 0, "--no-generate",
        "--quiet")  # fmt: skip
    assert (tmp_path / "notes.partial" / "thesis.txt").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "notes", "notes.partial"], "nothing else left"
    assert f"--out {tmp_path / 'notes'}" in (tmp_path / "notes" / "index.html").read_text(), "its own command"


def test_a_report_to_share_names_no_folder_of_this_machine_and_no_file(evil_run, tmp_path):
    """A report was what a team sends to clinicians, and it named this machine's folders (16 times) and the images'
    file names (patient names, record numbers). `--redact-paths` cuts paths to their last name and names images by
    index only, as `export --redact-paths` does."""
    from stylex.data import load_dataset

    plain = run("report", evil_run / "run", "--out", tmp_path / "plain", "--top-k", 1, "--explanations", 2,
                "--no-generate", "--quiet").output  # fmt: skip
    run("report", evil_run / "run", "--out", tmp_path / "shared", "--top-k", 1, "--explanations", 2,
        "--redact-paths", "--quiet")  # fmt: skip
    assert "report:" in plain
    names = load_dataset(evil_run / "data", progress=False).filenames
    places = {str(p) for p in (evil_run, tmp_path, evil_run.resolve(), tmp_path.resolve())}
    before, after = ((tmp_path / f / "index.html").read_text() for f in ("plain", "shared"))
    assert any(p in before for p in places) and any(f"image {i}: " in before for i in range(len(names))), "premise"
    assert not [p for p in places if p in after] and not [n for n in names if n in after]
    texts = {f: f.read_text() for f in (tmp_path / "shared").rglob("*") if f.suffix in (".json", ".html", ".txt")}
    assert (tmp_path / "shared" / "reconstruct" / "reconstruction.json") in texts, "made for the report"
    assert not [f for f, text in texts.items() if any(p in text for p in places)], "nor in the figures' JSON"
    assert "stylex report run --out shared" in after and "--redact-paths" in after, "the commands, by name"
    # a data folder outside the project, whose name needs quoting in a shell and escaping in HTML and JSON
    import html as html_lib

    odd = tmp_path / "O'Brien & Müller" / "scans"
    shutil.copytree(evil_run / "data", odd)
    run("report", evil_run / "run", "--out", tmp_path / "odd", "--data", odd, "--top-k", 1, "--explanations", 0,
        "--redact-paths", "--quiet")  # fmt: skip
    for f in (tmp_path / "odd").rglob("*"):
        if f.suffix in (".json", ".html"):
            text = f.read_text()
            assert not [w for w in ("O'Brien", "O&#x27;Brien", "Brien", "M\\u00fcller", "Müller") if w in text], f
            if f.suffix == ".json":
                json.loads(text)  # still valid
    assert "--data scans" in html_lib.unescape((tmp_path / "odd" / "index.html").read_text())
    # relative folders (`--out r --attributes af`, from the folder they lie in) are shown absolute in the commands:
    # they were left there in full
    shutil.copytree(evil_run / "run" / "attfind", tmp_path / "af")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        run("report", evil_run / "run", "--out", "rel", "--attributes", "af", "--top-k", 1, "--explanations", 0,
            "--no-generate", "--redact-paths", "--quiet")  # fmt: skip
    page = (tmp_path / "rel" / "index.html").read_text()
    assert "--attributes af" in page and not [p for p in places if p in page]


def test_the_report_reads_each_dataset_once(evil_run, tmp_path, monkeypatch):
    """The report read the data again to make its reconstruction figures, so each file's warnings came twice."""
    import stylex.data
    import stylex.explain.report

    real, read = stylex.data.load_dataset, []
    monkeypatch.setattr(
        stylex.data, "load_dataset", lambda path, *a, **kw: read.append(str(path)) or real(path, *a, **kw)
    )
    monkeypatch.setattr(stylex.explain.report, "_reconstruction_figures", lambda run: None)  # none made before
    stylex.explain.report.write_report(evil_run / "run", tmp_path / "r", top_k=1, num_explanations=1, quiet=True)
    assert read and len(read) == len(set(read)), read


def test_the_report_explains_itself_and_names_classes_without_held_out_images(evil_run, tmp_path, monkeypatch):
    """A clinician read attribute names and loss curves with no word on what they mean; and a rare class without
    held-out images was left out of "Accuracy per class" without a word."""
    import stylex.explain.report as report

    per_class = {EVIL: 1.0, "circle & co": None}
    monkeypatch.setattr(
        report, "_classifier_metrics", lambda run: {"val_accuracy": 1.0, "per_class_accuracy": per_class}
    )
    html = report.write_report(evil_run / "run", tmp_path / "r", top_k=1, num_explanations=0, generate=False,
                               quiet=True).read_text()  # fmt: skip
    assert "How to read this report" in html and "not a finding about the images or a diagnosis" in html
    assert "circle &amp; co</span>" in html and "no held-out image" in html


def _host() -> str:
    from stylex.data.dataset import _owner

    return _owner().split("~")[0]


def test_report_without_attfind_names_the_command(evil_run, tmp_path):
    empty = tmp_path / "no_attfind"
    empty.mkdir()
    result = run("report", evil_run / "run", "--out", tmp_path / "r", "--attributes", empty, "--quiet")
    assert result.output.startswith("warning: no AttFind results in "), "said on the terminal too"
    html = (tmp_path / "r" / "index.html").read_text()
    assert "stylex attfind --model" in html and "No AttFind results" in html
    for ref in _local_refs(html):
        assert (tmp_path / "r" / ref).is_file(), ref


def test_report_of_an_exported_model(evil_run, tmp_path):
    """An export's report is titled with its name, shows its card's figures and notes, says the images are the
    shipped samples and rebuilds the training chain on the source data; AttFind's --frames sets the GIF length."""
    from PIL import Image

    from stylex.explain.html import esc
    from stylex.zoo import export_run

    notes = "stylex train --preset tiny --max-steps 2 <b>2 s</b>"
    card = export_run(evil_run / "run", tmp_path / "export", num_samples=4, name="tiny-leaf", notes=notes,
                      metrics={"wu_sufficiency@10": 0.125})  # fmt: skip
    model = tmp_path / "export" / "stylex"
    run("attfind", "--model", model, "--out", tmp_path / "af", "--num-images", 4, "--top-k", 1, "--fast", 8,
        "--max-batch", 64, "--frames", 3, "--quiet")  # fmt: skip
    gifs = sorted((tmp_path / "af" / "attributes").rglob("*.gif"))
    assert gifs and all(Image.open(g).n_frames == 4 for g in gifs)  # 3 positions there and back: 2 * 3 - 2
    run("report", model, "--out", tmp_path / "r", "--attributes", tmp_path / "af", "--top-k", 1, "--slider-images",
        1, "--frames", 3, "--explanations", 1, "--quiet")  # fmt: skip
    html = (tmp_path / "r" / "index.html").read_text()
    assert "<title>StylEx report: tiny-leaf</title>" in html and "<h1>StylEx report: tiny-leaf</h1>" in html
    assert "StylEx report: stylex" not in html
    assert esc(notes) in html and notes not in html
    source = str((evil_run / "data").resolve())
    assert f"stylex train --data {esc(source)}" in html and "stylex export" in html
    assert "runs/tiny-leaf/stylex" in html and f"--model {esc(str(model.resolve()))}" in html
    assert f"{card['samples']['num_images']} shipped sample images" in html
    rec, training = card["reconstruction"], card["training"]
    assert f"{rec['consistency']:.3f}" in html and f"{rec['identity']:.3f}" in html
    assert f"{training['steps']} steps" in html and "card.json of the exported model" in html
    for ref in _local_refs(html):
        assert (tmp_path / "r" / ref).is_file(), ref
    assert "wu_sufficiency@10 (recorded at export)</th><td>0.125" in html and "this AttFind, 3 images" in html
    # a model exported on another machine: its training data is not here, and the report says so
    config = json.loads((model / "config.json").read_text())
    config["export"]["source_data"] = "/elsewhere/data.npz"
    (model / "config.json").write_text(json.dumps(config))
    card_file = tmp_path / "export" / "card.json"
    card_file.write_text(json.dumps({**json.loads(card_file.read_text()), "source_data": "/elsewhere/data.npz"}))
    run("report", model, "--out", tmp_path / "r", "--attributes", tmp_path / "af", "--no-generate", "--quiet")
    html = (tmp_path / "r" / "index.html").read_text()
    assert html.count("/elsewhere/data.npz (on the machine that trained it; the model ships only its samples)") == 2
    # shared: the export's classifier (recorded relative to it, shown resolved) is named by its folder alone too
    run("report", model, "--out", tmp_path / "r", "--attributes", tmp_path / "af", "--no-generate", "--redact-paths",
        "--quiet")  # fmt: skip
    html = (tmp_path / "r" / "index.html").read_text()
    leaks = [p for p in {str(tmp_path), str(tmp_path.resolve()), "/elsewhere"} if p in html]
    assert leaks == [] and "stylex: classifier" in html


# ------------------------------------------------------------------------------------------------ viewer over HTTP
TOKEN = "a-test-token_0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def viewer_url(evil_run):
    from stylex.explain.viewer import load_viewer, make_server

    server = make_server(load_viewer(evil_run / "run", num_images=4), "127.0.0.1", 0, quiet=True, token=TOKEN)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _request(url, data=None, content_type=None, headers=None):
    h = dict(headers or {})
    if content_type:
        h["Content-Type"] = content_type
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=h), timeout=30) as r:
            return r.status, r.read(), r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers


def _authed(url, data=None, content_type=None, headers=None):
    """`_request` with the viewer's token."""
    return _request(url, data, content_type, {**AUTH, **(headers or {})})


def _png(size=(20, 12), mode="RGB") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, size, (200, 30, 30) if mode == "RGB" else (200, 30, 30, 128)).save(buf, "PNG")
    return buf.getvalue()


def test_the_viewer_offers_images_of_every_class():
    """The first 12 AttFind images of a dataset sorted by class held classes 0-2 of 10 only."""
    from stylex.attfind.run import round_robin

    labels = [k // 5 for k in range(50)]  # 10 classes of 5 images, in class order
    assert [labels[k] for k in round_robin(labels, 12)] == [*range(10), 0, 1]
    assert round_robin([2, 0, 2], 5) == [1, 0, 2] and round_robin([], 3) == []


def test_the_viewer_asks_for_its_token(viewer_url):
    """`stylex serve` had no login: anyone who reached the port could use it. Now every request needs the token
    (a cookie set by opening /?token=..., or a Bearer header); the token leaves the address bar at once."""
    for path in ("/", "/api/info"):
        status, body, _ = _request(viewer_url + path)
        assert status == 401 and "needs its token" in json.loads(body)["error"], path
        assert _request(viewer_url + path, headers={"Authorization": "Bearer wrong-token-0123456789"})[0] == 401
        assert _request(viewer_url + path, headers={"Cookie": "stylex-viewer-1=" + TOKEN})[0] == 401, "other port"
    assert _request(viewer_url + "/api/render", b"{}", "application/json")[0] == 401
    assert _request(viewer_url + "/?token=wrong-token-0123456789")[0] == 401
    assert _request(viewer_url + "/api/info?token=" + TOKEN)[0] == 401, "only the page takes it in the address"

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    try:
        urllib.request.build_opener(NoRedirect).open(viewer_url + "/?token=" + TOKEN, timeout=30)
    except urllib.error.HTTPError as e:
        status, headers = e.code, e.headers
    assert status == 303 and headers["Location"] == "/"
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN in cookie
    port = viewer_url.rsplit(":", 1)[1]
    mine = f"stylex-viewer-{port}={TOKEN}"
    for cookie in (  # other localhost apps' cookies (values Python's SimpleCookie refused, dropping ours) and a
        f"other=1; {mine}",  # same-named one a page elsewhere set: none locks the user out
        f'a={{"x": 1}}; b=b c; {mine}',
        f"{mine}; stylex-viewer-{port}=junk",
        f"stylex-viewer-{port}=junk; {mine}",
    ):
        assert _request(viewer_url + "/api/info", headers={"Cookie": cookie})[0] == 200, cookie
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=30)
    conn.putrequest("GET", "/api/info")
    conn.putheader("Cookie", "x=1")  # split over two headers, as HTTP/2 proxies do
    conn.putheader("Cookie", mine)
    conn.endheaders()
    assert conn.getresponse().status == 200
    conn.close()
    assert _request(viewer_url + "/", headers=AUTH)[0] == 200
    assert _request(viewer_url + "/?token=an-old-token-0123456789", headers={"Cookie": mine})[0] == 200, "old link"
    # a browser gets a short page saying what to do; every 401 names the scheme
    status, body, headers = _request(viewer_url + "/", headers={"Accept": "text/html,*/*"})
    assert status == 401 and b"needs its token" in body and headers["Content-Type"].startswith("text/html")
    assert headers["WWW-Authenticate"].startswith("Bearer")
    # behind a TLS proxy the page's origin is https
    body = json.dumps({"image": "i0"}).encode()
    origin = {**AUTH, "Origin": f"https://127.0.0.1:{port}"}
    assert _request(viewer_url + "/api/render", body, "application/json", origin)[0] == 200


def test_make_server_makes_a_token_unless_told_not_to():
    from stylex.explain.viewer import make_server

    for token, expected in (("auto", 32), (None, None)):
        server = make_server(None, port=0, token=token)
        assert (server.token if expected is None else len(server.token)) == expected
        server.server_close()
    server = make_server(None, port=0)
    assert server.token and len(server.token) == 32, "a token by default"
    server.server_close()


def test_a_viewer_token_must_be_long_and_plain():
    import stylex
    from stylex.explain.viewer import make_server, new_token

    for bad in ("short", "x" * 15, "has space 0123456789", "semi;colon0123456789", "é" * 20):
        with pytest.raises(stylex.StylexError, match="16 to 256 characters"):
            make_server(None, port=0, token=bad)
    tokens = {new_token() for _ in range(3)}
    assert len(tokens) == 3 and all(len(t) == 32 for t in tokens)
    make_server(None, port=0, token=tokens.pop()).server_close()


def test_stylex_serve_prints_an_address_with_a_token_that_opens_the_viewer(evil_run, monkeypatch):
    """The CLI makes a token by default and prints it in the address; a browser (a cookie jar here) that opens
    the address can then use the API, a client without it gets a 401."""
    import http.cookiejar

    monkeypatch.delenv("STYLEX_VIEWER_TOKEN", raising=False)
    command = [sys.executable, "-m", "stylex", "serve", str(evil_run / "run"), "--port", "0", "--num-images", "1"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        address = re.search(r"(http://127\.0\.0\.1:\d+)/\?token=([A-Za-z0-9_-]{32}) ", line)
        assert address, line + proc.stderr.read() if proc.poll() is not None else line
        base = address.group(1)
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        with browser.open(f"{base}/?token={address.group(2)}", timeout=60) as r:
            assert r.status == 200 and r.url == base + "/" and b"StylEx viewer" in r.read()
        with browser.open(base + "/api/info", timeout=60) as r:
            assert json.loads(r.read())["classes"][0] == EVIL
        _request(f"{base}/?%74oken={address.group(2)}")  # a query spelled otherwise: hidden in the log too
        assert _request(base + "/api/info")[0] == 401
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    log = proc.stderr.read()
    assert "GET /?[query hidden]" in log and address.group(2) not in log, "the request log hides the token"
    # bound to every address, the first line gave http://0.0.0.0:PORT, which not every browser opens: this machine's
    # loopback address, then the one for colleagues
    import socket

    proc = subprocess.Popen([*command, "--host", "0.0.0.0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first, second = proc.stdout.readline(), proc.stdout.readline()
        assert re.match(r"StylEx viewer on http://127\.0\.0\.1:\d+/\?token=", first), first
        assert second.startswith(f"colleagues open http://{socket.gethostname()}:"), second
        base = re.search(r"(http://127\.0\.0\.1:\d+)/", first).group(1)
        assert _request(base + "/api/info")[0] == 401, "it answers there"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_serve_token_options(evil_run, monkeypatch):
    import stylex.explain.viewer as viewer_module

    monkeypatch.delenv("STYLEX_VIEWER_TOKEN", raising=False)
    result = run("serve", evil_run / "run", "--token", "short", "--port", 0, ok=False)
    assert result.exit_code != 0 and "16 to 256 characters" in result.output
    result = run("serve", evil_run / "run", "--token", "x" * 20, "--no-token", ok=False)
    assert result.exit_code == 2 and "contradict" in result.output
    monkeypatch.setenv("STYLEX_VIEWER_TOKEN", "short")
    assert "STYLEX_VIEWER_TOKEN has 5 characters" in run("serve", evil_run / "run", "--port", 0, ok=False).output
    served = []
    monkeypatch.setattr(viewer_module, "serve", lambda *a, **k: served.append(k["token"]))
    monkeypatch.setenv("STYLEX_VIEWER_TOKEN", "x" * 20)
    run("serve", evil_run / "run", "--no-token")  # the flag beats a token exported in the shell
    run("serve", evil_run / "run")
    monkeypatch.delenv("STYLEX_VIEWER_TOKEN")
    run("serve", evil_run / "run")
    assert served == [None, "x" * 20, "auto"]


def test_viewer_api_renders_and_refuses(viewer_url):
    status, body, headers = _authed(viewer_url + "/")
    assert status == 200 and "script-src 'sha256-" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    info = json.loads(_authed(viewer_url + "/api/info")[1])
    assert info["classes"][0] == EVIL and info["images"] and info["sliders"]

    def render(values):
        status, body, _ = _authed(
            viewer_url + "/api/render", json.dumps({"image": "i0", "values": values}).encode(), "application/json"
        )
        assert status == 200, body
        return json.loads(body)

    base = render({})
    assert abs(sum(base["probs"]) - 1) < 1e-4 and base["edited"].startswith("data:image/png;base64,")
    moved = [render({"0": 1.0}), render({"0": -1.0})]
    assert any(m["edited"] != base["edited"] for m in moved)

    # no path reaches the file system; only the page and the API exist
    for path in ("/../../etc/passwd", "/index.html", "/%2e%2e/etc/passwd", "/static/app.js", "/api/../../etc"):
        assert _authed(viewer_url + path)[0] == 404, path
    status, _, headers = _authed(viewer_url + "/api/render")
    assert status == 405 and headers["Allow"] == "POST"
    # uploads: images only, size-checked, decoded in memory
    assert _authed(viewer_url + "/api/upload", b"hello, not an image", "application/octet-stream")[0] == 400
    assert _authed(viewer_url + "/api/upload", b"", "application/octet-stream")[0] == 400
    too_big = b"\x89PNG" + b"\0" * (5 * 1024 * 1024 + 1)
    assert _authed(viewer_url + "/api/upload", too_big, "application/octet-stream")[0] == 413
    assert _authed(viewer_url + "/api/upload", _png(), "text/plain")[0] == 415
    status, body, _ = _authed(viewer_url + "/api/upload", _png(mode="RGBA"), "application/octet-stream")
    assert status == 200 and json.loads(body)["image"].startswith("u")
    # malformed requests get a 4xx with one sentence, never a traceback
    bad_requests = [{"image": "../x"}, {"image": "i0", "values": {"99": 1}}, {"image": "i0", "values": {"0": "NaN"}}]
    for payload in (b"{", b"[]", *(json.dumps(r).encode() for r in bad_requests)):
        status, body, _ = _authed(viewer_url + "/api/render", payload, "application/json")
        assert 400 <= status < 500 and "Traceback" not in body.decode()
    # DNS rebinding and cross-origin posts
    assert _authed(viewer_url + "/", headers={"Host": "evil.example:80"})[0] == 403
    status = _authed(viewer_url + "/api/render", b"{}", "application/json", {"Origin": "http://evil.example"})[0]
    assert status == 403


def test_decode_image_rejects_bombs_and_non_images():
    from PIL import Image

    from stylex.explain.viewer import HTTPError, decode_image

    assert decode_image(_png((30, 20)), 16).shape == (16, 16, 3)
    buf = io.BytesIO()
    Image.new("1", (9000, 9000)).save(buf, "PNG")  # small file, 81 M pixels
    with pytest.raises(HTTPError, match="pixels"):
        decode_image(buf.getvalue(), 16)
    buf = io.BytesIO()
    Image.new("RGBA", (4200, 4200)).save(buf, "PNG")  # 60 KB that took 1 GB to decode under the old 40 M cap
    with pytest.raises(HTTPError, match="4200x4200 pixels; upload one under 16,777,216"):
        decode_image(buf.getvalue(), 16)
    with pytest.raises(HTTPError, match="not a readable image"):
        decode_image(_png()[:40], 16)


# ------------------------------------------------------------------------------------------------ Python API
def test_python_api(evil_run, tmp_path):
    import torch

    import stylex
    from stylex.data import load_dataset

    model, classifier = stylex.load_run(evil_run / "run")
    x = load_dataset(evil_run / "data", resolution=16, progress=False).tensors(list(range(4)))  # [4, 3, 16, 16]
    assert model.encode(x).shape == (4, model.config.model.w_dim)
    assert model.reconstruct(x, classifier(x)).shape == x.shape
    result = stylex.AttFind(model, classifier, top_k=2, fast=4, max_batch=64, progress=False).run(x)
    assert isinstance(result, stylex.AttFindResult) and result.class_names[0] == EVIL
    assert result.effects.effects.shape == (4, 2, model.G.layout.num_coords, 2)
    e = stylex.counterfactual(model, classifier, result, x[0], strategy="independent", top_k=2)
    assert isinstance(e, stylex.ImageExplanation) and len(e.steps) == 2 and e.source == "image"
    _check_pictures(e, x[0], tmp_path / "pictures")

    # An image AttFind measured, given with its key there, reuses its row of the effect table (none computed).
    from stylex.attfind.effects import StyleEffects

    compute = StyleEffects.compute

    def counting(self, *args, **kwargs):
        calls.append(1)
        return compute(self, *args, **kwargs)

    calls = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(StyleEffects, "compute", counting)
        again = stylex.counterfactual(model, classifier, result, x[1], key=1, strategy="independent", top_k=2)
        assert not calls and again.source == "image with key 1"
        stylex.counterfactual(model, classifier, result, x[1], key=2, strategy="independent", top_k=2)
        assert calls, "another image's key: its effects are computed"
    loaded = stylex.load_attfind(evil_run / "run" / "attfind")
    assert loaded.effects is not None and loaded.class_names == result.class_names
    with pytest.raises(stylex.StylexError, match="px"):
        stylex.AttFind(model, classifier).run(torch.zeros(3, 3, 8, 8))
    from stylex.classifier import SmallCNN

    other = SmallCNN(2, 16, width=4).eval()  # not the classifier the model trained with: said, not silent
    with pytest.warns(UserWarning, match="is not the one the model was trained with"):
        stylex.AttFind(model, other, top_k=1, fast=4, progress=False)
    with pytest.warns(UserWarning, match="is not the one the model was trained with"):
        stylex.counterfactual(model, other, result, x[0], strategy="independent", top_k=1)


def _check_pictures(e, x, tmp_path):
    """The pictures of an explanation from `stylex.counterfactual` (a Python user had only numbers): the input, its
    reconstruction and one image per step, with the probabilities the steps record."""
    import dataclasses

    import torch

    import stylex

    T = len(e.steps)
    assert e.images.shape == (T + 2, *x.shape) and e.image_probs.shape == (T + 2, len(e.class_names))
    assert torch.equal(e.images[0], x.float().cpu()), "the first tile is the input"
    assert torch.allclose(e.image_probs[1], torch.tensor(e.base_probs), atol=1e-5), "then its reconstruction"
    for t, step in enumerate(e.steps):
        assert torch.allclose(e.image_probs[t + 2], torch.tensor(step.probs), atol=1e-5), f"step {t + 1}"
    picture = e.picture()
    assert picture.width > (T + 2) * x.shape[-1] and picture.mode == "RGB"
    assert e._repr_png_().startswith(b"\x89PNG") and e.save(tmp_path / "e.png").read_bytes().startswith(b"\x89PNG")
    for wrong, why in ((tmp_path, "is a folder"), (tmp_path / "e.jpg", "name it e.png")):
        with pytest.raises(stylex.StylexError, match=why):
            e.save(wrong)
    assert sorted(p.name for p in tmp_path.parent.iterdir() if p.name.startswith(tmp_path.name)) == [tmp_path.name]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.png"]
    d = e.to_dict()
    assert "images" not in d and json.loads(json.dumps(d))["outcome"] == e.outcome
    bare = dataclasses.replace(e, images=None, image_probs=None)  # e.g. one rebuilt from explanation.json
    assert bare._repr_png_() is None and bare == e
    with pytest.raises(stylex.StylexError, match="no pictures"):
        bare.picture()


@pytest.mark.slow
def test_tutorial_runs(evil_run, tmp_path, monkeypatch, capsys):
    """docs/tutorial.md's Python blocks, in order, on the tiny run laid out like `make demo-train`'s (the shipped
    model the tutorial also names is only mentioned in its text, so this test does not need it)."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "tutorial.md").read_text()
    code = "\n".join(re.findall(r"```python\n(.*?)```", text, re.S))
    assert 'RUN = "runs/demo-train"' in code and "load_zoo" not in code
    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / "stylex").symlink_to(evil_run / "run")
    (demo / "data").symlink_to(evil_run / "data")
    monkeypatch.chdir(tmp_path)
    exec(compile(code.replace('RUN = "runs/demo-train"', f"RUN = {str(demo)!r}"), "docs/tutorial.md", "exec"), {})
    out = capsys.readouterr().out
    assert "sufficiency@5" in out and "open file://" in out
    html = (demo / "report" / "index.html").read_text()
    assert "No AttFind results" not in html, "the report shows the attributes the tutorial found"


@pytest.mark.slow
def test_readme_python_block_runs(capsys, tmp_path, monkeypatch):
    """The README's Python block, as written, on the shipped digits-32 model (in a scratch folder: it saves a
    picture)."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "stylex.AttFind(" in b]
    assert len(blocks) == 1
    monkeypatch.chdir(tmp_path)
    exec(compile(blocks[0].replace("fast=50", "fast=8"), "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "sufficiency@10" in out and "edit" in out
    assert (tmp_path / "explanation.png").read_bytes().startswith(b"\x89PNG")


def test_python_api_checks_what_it_is_given(evil_run):
    """A classifier given as a plain module is wrapped and checked once; wrong classifiers, results, images and
    options end in the library's own one-line errors; loading leaves the caller's random numbers alone."""
    import copy

    import torch
    from torch import nn

    import stylex
    from stylex.data import load_dataset

    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    model, classifier = stylex.load_run(evil_run / "run")
    assert torch.equal(torch.rand(3), expected), "loading draws no random numbers of the caller's"
    x = load_dataset(evil_run / "data", resolution=16, progress=False).tensors(list(range(4)))
    kw = {"top_k": 2, "fast": 4, "max_batch": 64, "progress": False}
    wrapped = stylex.AttFind(model, classifier, **kw).run(x)
    assert repr(wrapped).startswith(f"AttFindResult(attributes {{{EVIL!r}: 2, ") and "effects [4, 2, " in repr(wrapped)
    net = copy.deepcopy(classifier.model).train()  # a module in training mode, as a notebook may hold it
    plain = stylex.AttFind(model, net, **kw).run(x)
    assert not net.training and torch.equal(plain.effects.effects, wrapped.effects.effects)
    assert stylex.load_run(evil_run / "run", classifier=net)[1].fingerprint() == classifier.fingerprint()
    other = copy.deepcopy(net)
    with torch.no_grad():
        next(other.parameters()).add_(1.0)
    with pytest.raises(stylex.StylexError, match="not the one .* was trained with"):
        stylex.load_run(evil_run / "run", classifier=other)

    class Pair(nn.Module):
        def forward(self, x):
            return net(x), net(x).softmax(1)

    class Three(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            return self.fc(x.mean((2, 3)))

    for bad, why in ((Pair(), "instead of a logits tensor"), (Three(), "3 outputs but the model explains 2"),
                     ("hello", "must be a torch nn.Module")):  # fmt: skip
        with pytest.raises(stylex.StylexError, match=why):
            stylex.AttFind(model, bad)
        with pytest.raises(stylex.StylexError, match=why):
            stylex.counterfactual(model, bad, wrapped, x[0])
    for options, why in (({"top_k": 0}, "top_k"), ({"threshold": -1}, "threshold"), ({"shift_size": 0}, "shift_size"),
                         ({"fast": "32"}, "integer M"), ({"resamples": -1}, "resamples")):  # fmt: skip
        with pytest.raises(stylex.StylexError, match=why):
            stylex.AttFind(model, classifier, **options)
    with pytest.raises(stylex.StylexError, match="top_k must be at least 1"):
        stylex.counterfactual(model, classifier, wrapped, x[0], top_k=0)
    with pytest.raises(stylex.StylexError, match="NaN"):
        stylex.AttFind(model, classifier, **kw).run(x * float("nan"))
    with pytest.raises(stylex.StylexError, match="the 3 images have the same styles"):
        stylex.AttFind(model, classifier, **kw).run(x[[0, 0, 0]])  # every edit a no-op: 3 "attributes" of effect 0
    from stylex.attfind.run import encode_images

    with pytest.raises(stylex.StylexError, match="at least 2 images"):
        stylex.AttFind(model, classifier, **kw).run(x[:1])
    with pytest.raises(stylex.StylexError, match="got 3 keys for 4 images"):
        stylex.AttFind(model, classifier, **kw).run(x, keys=[0, 1, 2])
    with pytest.raises(stylex.StylexError, match="pass noise with styles"):
        stylex.AttFind(model, classifier, **kw).run(encode_images(model, classifier, x))
    with pytest.warns(UserWarning, match="0..255"):
        stylex.counterfactual(model, classifier, wrapped, (x[0] + 1) * 127.5, top_k=1)
    # images in 0..1 (torchvision's ToTensor) ran silently and found other attributes: said now
    with pytest.warns(UserWarning, match=r"images in 0\.\.1\? stylex expects \[-1, 1\]"):
        stylex.counterfactual(model, classifier, wrapped, (x[0] + 1) / 2, top_k=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # images in [-1, 1] with a dark pixel: nothing to say
        # float64 and half images ran into "mat1 and mat2 must have the same dtype"; they are taken as float32
        for dtype in (torch.float64, torch.float16, torch.bfloat16):
            e = stylex.counterfactual(model, classifier, wrapped, x[0].to(dtype), strategy="independent", top_k=1)
            assert e.images.dtype == torch.float32
        assert stylex.AttFind(model, classifier, **kw).run(x.double()).effects.effects.shape[0] == 4
    # A Python result records the weights it searched: a model trained on since (or another of the same shape) is
    # warned about, as for `stylex attfind` results, in the Python API's words.
    from stylex.attfind.run import StaleAttributesWarning

    moved = copy.deepcopy(model)
    with torch.no_grad():
        next(moved.G.parameters()).add_(0.5)
    with pytest.warns(StaleAttributesWarning, match=r"another model's, or trained on since\?.*stylex.AttFind\(model"):
        stylex.counterfactual(moved, classifier, wrapped, x[0], strategy="independent", top_k=1)
    digits, digits_clf = stylex.load_run("zoo:digits-32")  # another model: its result does not fit this one
    with pytest.raises(stylex.StylexError, match="made for another model"):
        stylex.counterfactual(digits, digits_clf, wrapped, torch.zeros(3, 32, 32))
    with pytest.raises(stylex.StylexError, match="RUN/attfind"):
        stylex.load_attfind(evil_run / "run")
    with pytest.raises(stylex.StylexError, match="does not exist"):
        stylex.load_attfind(evil_run / "nowhere")
    # a device this machine lacks: one sentence, as on the command line (it was "Torch not compiled with CUDA")
    for device, why in (("gpu", "'gpu' is not a device"), ("cuda:99", "cuda:99: this")):
        with pytest.raises(stylex.StylexError, match=why):
            stylex.load_run(evil_run / "run", device=device)
        with pytest.raises(stylex.StylexError, match=why):
            stylex.train_stylex(evil_run / "data", evil_run / "clf", evil_run / "elsewhere", stylex.preset("tiny"),
                                device=device)  # fmt: skip
    assert not (evil_run / "elsewhere").exists()
    assert stylex.load_attfind(evil_run / "run" / "attfind" / "attributes.json").effects is not None
    # Python mistakes a notebook makes, each in one sentence that says what to pass (they were TypeErrors and
    # AttributeErrors from deep inside, or advice that did not fit)
    run_dir, found = evil_run / "run", evil_run / "run" / "attfind"
    mistakes = [
        (lambda: stylex.counterfactual(str(run_dir), classifier, wrapped, x[0]), "model must be a StylEx model"),
        (lambda: stylex.counterfactual(model, classifier, str(found), x[0]), "stylex.load_attfind"),
        (lambda: stylex.write_report(model, evil_run / "r"), "run_dir must be a folder's path, got a StylEx"),
        (lambda: stylex.write_report(run_dir, evil_run / "r", wrapped), "save it first with result.save"),
        (lambda: stylex.explain_images(run_dir, found, evil_run / "clf" / "config.json", indices=[0]), "is a file"),
        (lambda: stylex.reconstruct(run_dir, num_images=0), "at least 2"),
        (lambda: stylex.load_run(run_dir, classifier=evil_run / "clf"), "leave it out to load the one the run"),
        (
            lambda: stylex.explain_images(run_dir, found, evil_run / "x", indices=[0], data=evil_run / "moved"),
            r"moved\?\); pass it with data=, or explain image files with images=",
        ),
        (lambda: stylex.counterfactual(model, classifier, wrapped, evil_run / "data"), "is a folder, not an image"),
        (lambda: stylex.counterfactual(model, classifier, wrapped, run_dir / "config.json"), "not an image file"),
    ]
    # a run whose data moved away since (the loader said only "does not exist")
    moved = evil_run / "moved-run"
    shutil.copytree(run_dir, moved, ignore=shutil.ignore_patterns("attfind", "reconstruct"))
    config = json.loads((moved / "config.json").read_text())
    config.pop("data_relative", None)
    (moved / "config.json").write_text(json.dumps({**config, "data": str(evil_run / "gone")}))
    from stylex.attfind.run import run_attfind

    mistakes += [
        (
            lambda: stylex.explain_image(run_dir, found, evil_run / "x", image=evil_run / "data"),
            "is a folder; explain_",
        ),
        (lambda: stylex.explain_image(run_dir, found, evil_run / "x", index=0, top_k=0), "top_k must be at least 1"),
        (lambda: stylex.write_report(run_dir, evil_run / "r", evil_run / "no-attfind"), r"attributes_dir=\)"),
        (lambda: stylex.reconstruct(moved), r"gone, is not here \(moved\?\); pass it with data="),
        (lambda: run_attfind(moved, out=evil_run / "x", quiet=True), r"is not here \(moved\?\); pass it with data="),
    ]
    for call, why in mistakes:
        with pytest.raises(stylex.StylexError, match=why):
            call()
    assert not (evil_run / "r").exists() and not (evil_run / "x").exists()
    shutil.rmtree(moved)
    # AttFind's attributes.json given for its folder, as load_attfind takes it
    given_file = stylex.explain_image(run_dir, found / "attributes.json", evil_run / "x", index=0, quiet=True)
    assert given_file["explanations"] or given_file["skipped"]
    shutil.rmtree(evil_run / "x")
    e = stylex.counterfactual(model, classifier, wrapped, x[0], key=None, strategy="independent", top_k=1)
    assert e.source == "image"
    one = stylex.explain_image(run_dir, found, evil_run / "one", index=0, strategies="subset", quiet=True)
    assert set(one["explanations"]) | set(one["skipped"]) == {"subset"}, "one strategy given as a string"
    # a report of attributes found from Python, which records no images: it says so (it said "(None) are no longer
    # there", and gave a `stylex attfind` command that would search other images)
    wrapped.save(evil_run / "py-attfind" / "attributes.json")
    wrapped.effects.save(evil_run / "py-attfind" / "effects.safetensors")
    page = stylex.write_report(run_dir, evil_run / "py-report", evil_run / "py-attfind", top_k=1, num_explanations=1,
                               generate=False, quiet=True).read_text()  # fmt: skip
    assert "were not recorded (a search from Python)" in page and "None" not in page
    assert "found from Python" in page and "stylex attfind --model" not in page


def test_no_command_writes_into_the_image_folder_it_reads(evil_run, tmp_path):
    """Pictures written inside an image folder became images of it: the next command read 3 more "Cat" images, and
    the run then refused its data as changed. Every command that writes pictures refuses an output folder inside
    the image folder it reads (given, or the run's or AttFind's), before any work; a hidden folder is fine (loading
    skips it), and so is a factor folder (which reads only the files its factors.csv lists)."""
    import stylex
    from stylex.attfind.run import run_attfind
    from stylex.data.dataset import check_out_of_data
    from stylex.explain.run import explain_images
    from stylex.pipeline import reconstruct

    data, run_dir = evil_run / "data", evil_run / "run"
    found = run_dir / "attfind"
    before = sorted(p.relative_to(data) for p in data.rglob("*"))
    inside = data / EVIL / "out"
    calls = {
        "train": lambda: stylex.train_stylex(data, evil_run / "clf", inside, stylex.preset("tiny")),
        "attfind": lambda: run_attfind(run_dir, out=inside, quiet=True),
        "explain (the run's data)": lambda: explain_images(run_dir, found, inside, indices=[0], quiet=True),
        "explain (an image of it)": lambda: explain_images(run_dir, found, data, images=[next(data.rglob("*.png"))]),
        "report": lambda: stylex.write_report(run_dir, data / "report", quiet=True),
        "reconstruct": lambda: reconstruct(run_dir, out=data),
        "export": lambda: stylex.export_run(run_dir, inside),
    }  # fmt: skip
    for name, call in calls.items():
        with pytest.raises(stylex.StylexError, match="is inside the image folder"):
            call()
        assert sorted(p.relative_to(data) for p in data.rglob("*")) == before, f"{name} wrote nothing there"
    reconstruct(run_dir, out=data / ".stylex" / "rec", num_images=2)  # hidden: loading skips it
    assert (data / ".stylex" / "rec" / "reconstructions.png").is_file()
    shutil.rmtree(data / ".stylex")
    (tmp_path / "synth").mkdir()
    (tmp_path / "synth" / "factors.csv").write_text("filename\n")
    check_out_of_data(tmp_path / "synth" / "out", tmp_path / "synth", tmp_path / "data.npz", None, tmp_path / "none")
    (tmp_path / "a").mkdir()
    with pytest.raises(stylex.StylexError, match="is inside the image folder"):
        check_out_of_data(tmp_path / "a" / "b", tmp_path / "a")
    # a class folder that is a link elsewhere: loading follows it, so its target counts as the data's
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "a" / "cats").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(stylex.StylexError, match="is inside the image folder"):
        check_out_of_data(tmp_path / "elsewhere" / "recon", tmp_path / "a")
    check_out_of_data(tmp_path / "a" / ".stylex" / "x", tmp_path / "a")  # hidden: skipped by loading


def test_train_measures_a_classifier_of_its_own_and_says_when_it_is_near_chance(evil_run, tmp_path, monkeypatch):
    """A factory given no weights trained StylEx against a random classifier without a word. `stylex train` now
    measures any classifier on the run's labelled held-out images, says when it is nearer chance than perfect, and
    records it for the report (which had "not recorded here" for every classifier not from train-classifier)."""
    import torch

    import stylex
    from stylex.classifier import SmallCNN

    untrained = SmallCNN(2, 16, width=4).eval()
    with torch.no_grad():
        untrained.head.weight.zero_()  # logits (3, 0) for every image: always class 0
        untrained.head.bias.copy_(torch.tensor([3.0, 0.0]))
    with pytest.warns(UserWarning, match=r"nearer chance .* held-out images of the run\)\. An untrained classifier"):
        stylex.train_stylex(evil_run / "data", untrained, tmp_path / "run", stylex.preset("tiny", max_steps=1),
                            quiet=True)  # fmt: skip
    checked = json.loads((tmp_path / "run" / "config.json").read_text())["classifier_accuracy"]
    num_val = stylex.load_run(tmp_path / "run", classifier=untrained)[0].run_info["num_val"]
    assert checked["num_images"] == num_val and 0 <= checked["accuracy"] < 0.75
    page = stylex.write_report(tmp_path / "run", tmp_path / "report", classifier=untrained, generate=False,
                               quiet=True).read_text()  # fmt: skip
    assert f"accuracy {checked['accuracy']:.3f} on {checked['num_images']} held-out images of this run" in page
    assert "not recorded here" not in page
    assert "nearer chance" in page, "the summary's note too"
    import stylex.pipeline

    monkeypatch.setattr(stylex.pipeline, "CLASSIFIER_CHECK_IMAGES", 2)  # a seeded sample of a large held-out split
    with pytest.warns(UserWarning, match=rf"on 2 held-out images of {checked['num_images']} of the run"):
        stylex.train_stylex(evil_run / "data", untrained, tmp_path / "run2", stylex.preset("tiny", max_steps=1),
                            quiet=True)  # fmt: skip
    sampled = json.loads((tmp_path / "run2" / "config.json").read_text())["classifier_accuracy"]
    assert sampled["num_images"] == 2 and sampled["num_held_out"] == checked["num_images"]


def test_captions_in_pictures_draw_what_the_font_has():
    """Pillow's default font draws ASCII only: other letters came out as empty boxes ("d\u25a1gs")."""
    import numpy as np
    import torch

    from stylex.explain.render import annotated_grid, drawable, probability_lines

    assert drawable("blue dögs -> café") == "blue dogs -> cafe" and drawable("猫 0.41") == "? 0.41"
    assert drawable("Pneumonie – früh “x” ×2 Straße") == 'Pneumonie - fruh "x" x2 Strasse'
    assert drawable("«chat» Œuvre ẞ Đorđe ½") == '"chat" OEuvre SS Dorde 1/2'
    tile = torch.zeros(1, 3, 8, 8)
    same = [annotated_grid([tile], [[[name]]], title=name) for name in ("dögs", "dogs")]
    assert np.array_equal(np.asarray(same[0]), np.asarray(same[1]))
    names = ["кошки", "собаки", "bg_hue in [0.12, 0.16)", "dögs"]
    lines = probability_lines(torch.tensor([0.1, 0.2, 0.3, 0.4]), names)
    assert lines == ["0 кошки: 0.10", "1 собаки: 0.20", "bg_hue in [0.12, 0..: 0.30", "dögs: 0.40"]
    assert probability_lines(torch.tensor([0.3, 0.7]), ["a", "Pneumonie – früh"])[1] == "Pneumonie – früh: 0.70"


def test_words_in_pictures_stand_apart():
    """The default font's space is 2 px at its size: a title read "flipsatedit 1 of 1". Words now have 4 px or more
    between them (the title's ink spans wider with its spaces than without)."""
    import numpy as np
    import torch

    from stylex.explain.render import annotated_grid

    def ink_width(title):
        pixels = np.asarray(annotated_grid([torch.zeros(1, 3, 8, 8)], title=title, pad=4))[:14].min(axis=2)
        cols = np.flatnonzero((pixels < 128).any(axis=0))
        return cols[-1] - cols[0]

    assert ink_width("f l i p s") - ink_width("flips") >= 4 * 4


def test_import_stylex_is_light():
    code = (
        "import sys, stylex; assert 'torch' not in sys.modules; stylex.StylEx; assert 'torch' in sys.modules; "
        "assert callable(stylex.load_zoo) and callable(stylex.list_models); "
        "assert all(callable(getattr(stylex, n)) for n in stylex.__all__ if n != '__version__')"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    # the docs write stylex.zoo.zoo_path(...) after a bare `import stylex`: an AttributeError until something had
    # imported stylex.zoo
    code = "import stylex; assert stylex.zoo.zoo_path('digits-32').name == 'digits-32'; stylex.data.load_dataset"
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------------------------------ in a browser
def _playwright():
    """Playwright's sync API; skips with the reason when chromium or playwright is missing (fails under CI=true,
    where .ci/run installs both)."""
    why = None
    if not CHROMIUM.exists():
        why = f"no {CHROMIUM}: `apt-get install -y chromium` (.ci/run installs it) to run the browser tests"
    else:
        try:
            from playwright.sync_api import sync_playwright

            return sync_playwright
        except ImportError:
            why = "playwright is not installed: `pip install -e '.[dev]'` (never `playwright install`)"
    if os.environ.get("CI"):
        pytest.fail(why)
    pytest.skip(why)


@pytest.fixture(scope="module")
def browser():
    sync_playwright = _playwright()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


def _page(browser):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
    return page, problems


BROKEN_IMAGES = "Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)"


@pytest.mark.slow
def test_report_in_a_browser(browser, evil_run):
    page, problems = _page(browser)
    page.goto((evil_run / "report" / "index.html").as_uri())
    page.wait_for_load_state("load")
    assert page.evaluate("document.images.length") >= 8
    assert page.evaluate(BROKEN_IMAGES) == []
    # the class name is text, not an element
    assert page.locator("img[src='x']").count() == 0
    assert page.get_by_text(EVIL, exact=False).count() > 0
    # every slider and picture says which attribute it shows
    labels = page.eval_on_selector_all("input.frames", "els => els.map(e => e.getAttribute('aria-label'))")
    assert len(labels) >= 2 and len(set(labels)) == len(labels) and all(" toward " in t for t in labels)
    alts = page.eval_on_selector_all("img", "els => els.map(e => e.alt)")
    assert all(alts) and not {"sweep", "explanation", "attribute frames"} & set(alts)
    # a slider move changes the shown frame, its alt text (the probabilities drawn on it) and the spoken value
    slider = page.locator("input.frames").first
    img = page.locator(f"#{slider.get_attribute('data-target')}")
    before, alt_before = img.get_attribute("src"), img.get_attribute("alt")
    slider.focus()
    page.keyboard.press("End")
    after = img.get_attribute("src")
    assert after != before and after.endswith("_f2.webp")
    assert img.get_attribute("alt") != alt_before and "per image: " in img.get_attribute("alt")
    assert slider.get_attribute("aria-valuetext") == page.locator(f"#{slider.get_attribute('data-label')}").inner_text()
    # the animations wait for Play, and pause again (WCAG 2.2.2)
    animations = page.locator("img[data-animation]")
    assert animations.count() >= 2
    moving = "[...document.querySelectorAll('img[data-animation]')].some(i => i.src.endsWith(i.dataset.animation))"
    assert page.evaluate(moving) is False
    play = page.locator("button.play").first
    play.click()
    assert animations.first.get_attribute("src").endswith(".webp") and play.inner_text() == "Pause"
    page.wait_for_function("() => document.querySelector('img[data-animation]').naturalWidth > 0")  # it decodes
    play.click()
    assert animations.first.get_attribute("src").endswith("_still.png")
    assert play.get_attribute("aria-pressed") == "false"
    assert page.locator("main").count() == 1 and page.locator("main section").count() >= 4
    page.wait_for_function(f"() => document.getElementById('{slider.get_attribute('data-target')}').naturalWidth > 0")
    assert "toward" in page.locator(f"#{slider.get_attribute('data-label')}").inner_text()
    page.set_viewport_size({"width": 390, "height": 800})  # a phone: nothing wider than the screen
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert problems == []
    page.close()


@pytest.mark.slow
def test_viewer_in_a_browser(browser, viewer_url, tmp_path):
    page, problems = _page(browser)
    # without the token: a styled page that says so, and nothing its policy refuses (the console listed refusals)
    assert page.goto(viewer_url + "/").status == 401 and page.locator("h1").inner_text() == "Token needed"
    assert page.evaluate("getComputedStyle(document.body).maxWidth") == "640px"
    assert [p for p in problems if "401" not in p] == [], problems
    problems.clear()
    page.goto(viewer_url + "/?token=" + TOKEN)
    page.wait_for_function("() => document.body.dataset.renders === '1'")
    assert page.url == viewer_url + "/", "the token left the address bar"
    assert page.locator("img[src='x']").count() == 0
    assert page.locator("#probs th", has_text=EVIL).count() == 1
    first = page.get_attribute("#thumbs button.active", "aria-label")
    assert re.fullmatch(r"image 1, labelled .+", first) and page.get_attribute("#thumbs button.active", "aria-pressed")
    assert page.locator("#thumbs button[aria-pressed=true]").count() == 1
    alts = [page.get_attribute(f"#{i}", "alt") for i in ("input", "recon", "edited")]
    assert alts[0].startswith(first + ", classified ") and alts[1].startswith("reconstruction of " + first)
    assert alts[2].startswith("edited " + first)

    def shown():
        probs = page.eval_on_selector_all("#probs td.edited", "cells => cells.map(c => Number(c.dataset.value))")
        return page.get_attribute("#edited", "src"), probs

    image0, probs0 = shown()
    slider = page.locator("#sliders input[type=range]").first
    assert slider.get_attribute("aria-valuetext") == "0.00 (unedited)"
    ends = page.locator("#" + slider.get_attribute("aria-describedby")).inner_text()
    assert ends.startswith("min") and "max" in ends
    assert page.locator("#probs tr.pred th", has_text="(predicted)").count() == 1, "not by colour alone"
    assert page.locator("#announce").inner_text().startswith("edited " + first + ": classified ")
    slider.focus()
    changed = False
    for n, key in enumerate(("End", "Home"), start=2):  # the image may sit at one end of the coordinate already
        page.keyboard.press(key)
        page.wait_for_function(f"() => Number(document.body.dataset.renders) >= {n}")
        page.wait_for_timeout(300)  # let a queued render finish
        image1, probs1 = shown()
        if image1 != image0 and probs1 != probs0:
            changed = True
            break
    assert changed, "moving a slider changes the image and the probabilities"
    assert re.fullmatch(r"-?1\.00 toward (min|max).*", slider.get_attribute("aria-valuetext"))
    assert abs(sum(probs1) - 1) < 1e-3

    upload = tmp_path / "upload.png"
    upload.write_bytes(_png((24, 24)))
    renders = int(page.evaluate("document.body.dataset.renders"))
    page.set_input_files("#upload", str(upload))
    page.wait_for_function(f"() => Number(document.body.dataset.renders) > {renders}")
    assert page.locator("#thumbs button").count() == 5
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    page.set_input_files("#upload", str(bad))
    page.wait_for_function("() => document.getElementById('message').textContent.includes('not a readable image')")
    problems = [p for p in problems if "400" not in p]  # the refused upload logs its 400 response
    assert problems == []
    for width in (390, 960, 1100):  # a phone (the columns stack), and laptops (three columns; 1100 px scrolled)
        page.set_viewport_size({"width": width, "height": 800})
        assert page.evaluate("document.documentElement.scrollWidth") <= width, f"{width} px wide"
    assert page.title() == "StylEx viewer: run"
    page.close()


def test_the_viewer_is_quiet_when_a_client_goes_away(capsys):
    """`curl ... | head` or a closed tab reset the connection mid-reply: routine, so no traceback on the terminal;
    other errors still print theirs."""
    from stylex.explain.viewer import make_server

    server = make_server(None, port=0, quiet=True)
    try:
        for error in (ConnectionResetError(104, "Connection reset by peer"), BrokenPipeError(32, "Broken pipe")):
            try:
                raise error
            except OSError:
                server.handle_error(None, ("127.0.0.1", 1))
        assert capsys.readouterr().err == ""
        try:
            raise ValueError("a real bug")
        except ValueError:
            server.handle_error(None, ("127.0.0.1", 1))
        assert "ValueError: a real bug" in capsys.readouterr().err
    finally:
        server.server_close()


def test_a_viewer_for_colleagues_answers_only_its_own_names(evil_run, monkeypatch):
    """Bound beyond loopback (`--host 0.0.0.0`) the Host check was off: a page on any site could reach the viewer
    through DNS rebinding. It answers the machine's names and `--allowed-host` ones; idle connections time out, and
    connections beyond the cap are closed at once."""
    import socket

    from stylex.explain import viewer as viewer_module
    from stylex.explain.viewer import load_viewer, make_server

    viewer = load_viewer(evil_run / "run", num_images=1)
    server = make_server(viewer, "0.0.0.0", 0, quiet=True, allowed_hosts=("viewer.lab", "localhost:9000"), token=None)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{port}/api/info"
        assert _request(url, headers={"Host": f"attacker.example:{port}"})[0] == 403
        for name in ("viewer.lab", socket.gethostname(), "127.0.0.1"):
            assert _request(url, headers={"Host": f"{name}:{port}"})[0] == 200, name
        assert _request(url, headers={"Host": "localhost:9000"})[0] == 200, "a tunnel's own port, as named"
        assert _request(url, headers={"Host": "localhost:9001"})[0] == 403
        assert viewer_module._Handler.timeout == viewer_module.REQUEST_TIMEOUT
    finally:
        server.shutdown()
        server.server_close()
    # the cap, on a fresh server (a busy machine may not yet have freed the slots of the requests above); the
    # server accepts connections in the order they came, so the third one finds both slots held
    monkeypatch.setattr(viewer_module, "MAX_CONNECTIONS", 2)
    server = make_server(viewer, "127.0.0.1", 0, quiet=True, token=None)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]  # hold both slots
        extra = socket.create_connection(("127.0.0.1", port))
        extra.settimeout(20)
        assert extra.recv(100).startswith(b"HTTP/1.1 503"), "a connection beyond the cap is told so"
        assert extra.recv(1) == b"", "and closed at once"
        for conn in (*idle, extra):
            conn.close()
    finally:
        server.shutdown()
        server.server_close()


def test_a_linked_picture_in_an_attfind_folder_is_not_copied_into_the_report(evil_run, tmp_path):
    """A symbolic link in the attributes folder copied the file it points at (any readable file) into the report."""
    attfind = tmp_path / "attfind"
    shutil.copytree(evil_run / "run" / "attfind", attfind)
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    picture = next((attfind / "attributes").rglob("01_*.gif"))
    picture.unlink()
    picture.symlink_to(secret)
    run("report", evil_run / "run", "--attributes", attfind, "--out", tmp_path / "report", "--top-k", 1,
        "--slider-images", 1, "--frames", 3, "--explanations", 0, "--quiet")  # fmt: skip
    written = [p.read_bytes() for p in (tmp_path / "report").rglob("*") if p.is_file()]
    assert written and not any(b"TOP-SECRET" in data for data in written)
    assert len(list((tmp_path / "report" / "img").rglob("a01.webp"))) >= 1, "drawn anew instead"


def test_the_report_pictures_are_lossless_webp(evil_run):
    """The demo report was 18 MB, 6.8 of them GIFs; as lossless animated WebP they are 2.2 times smaller. Every frame,
    its duration and the loop are kept."""
    import numpy as np
    from PIL import Image, ImageSequence

    frames = sorted((evil_run / "report" / "img").glob("c*/a*_f*.webp"))  # the slider's frames: lossless WebP too
    assert frames and all(f.read_bytes()[12:16] == b"VP8L" for f in frames)
    webps = sorted(p for p in (evil_run / "report" / "img").glob("c*/a*.webp") if "_f" not in p.name)
    assert webps and not list((evil_run / "report" / "img").rglob("*.gif"))
    checked = 0
    for webp in webps:
        gif = next((g for g in (evil_run / "run" / "attfind" / "attributes").rglob(f"{webp.stem[1:]}_*.gif")
                    if webp.parent.name == f"c{_class_of(evil_run, g)}"), None)  # fmt: skip
        if gif is None:
            continue
        with Image.open(gif) as a, Image.open(webp) as b:
            frames_a = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(a)]
            frames_b = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(b)]
            assert len(frames_a) == len(frames_b) and all(
                (x == y).all() for x, y in zip(frames_a, frames_b, strict=True)
            )
            assert b.info.get("loop") == 0 and _durations(b) == _durations(a) and min(_durations(a)) > 0
        checked += 1
    assert checked


def test_a_gif_from_elsewhere_keeps_its_transparency_and_loop_count_as_webp(tmp_path):
    """The report converts whatever GIF an AttFind folder holds: one that plays once stays so (it looped forever),
    and transparent pixels stay transparent (they became black)."""
    import numpy as np
    from PIL import Image, ImageSequence

    from stylex.explain.report import _copy_picture, _webp

    if not _webp():
        pytest.skip("this Pillow has no animated WebP (the report keeps GIFs)")
    frames = []
    for k in range(3):
        im = Image.new("P", (8, 8), 1 + k % 2)  # red or green, with a transparent hole (index 0) inside
        im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
        im.paste(0, (2, 2, 4 + k, 5))
        frames.append(im)
    gif = tmp_path / "a.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=[50, 80, 120], transparency=0)  # no loop
    _copy_picture(gif, tmp_path / "a.webp")
    with Image.open(gif) as a, Image.open(tmp_path / "a.webp") as b:
        assert "loop" not in a.info and b.info.get("loop") == 1
        got = [np.asarray(f.convert("RGBA")) for f in ImageSequence.Iterator(b)]
        want = [np.asarray(f.convert("RGBA")) for f in ImageSequence.Iterator(a)]
        assert len(got) == 3 and all((x == y).all() for x, y in zip(got, want, strict=True))
        assert got[0][3, 3, 3] == 0 and got[0][0, 0, 3] == 255  # transparent where the GIF is, opaque elsewhere
        assert _durations(b) == [50, 80, 120]


def _durations(animation) -> list[int]:
    """Each frame's duration in ms (WebP says it once a frame is loaded)."""
    from PIL import ImageSequence

    out = []
    for frame in ImageSequence.Iterator(animation):
        frame.load()
        out.append(frame.info["duration"])
    return out


def _class_of(evil_run, gif) -> int:
    """The class index of an AttFind picture, from its class folder."""
    from stylex.data import class_dir_names

    classes = json.loads((evil_run / "run" / "attfind" / "attributes.json").read_text())["classes"]
    names = [c["class_name"] for c in sorted(classes, key=lambda c: c["class_index"])]
    return class_dir_names(names).index(gif.parent.name)


def test_the_report_counts_the_steps_of_the_weights(evil_run, tmp_path):
    """The report said 200 steps for a run checkpointed at 202 (its last stats line was at 200)."""
    from stylex.models.stylex import StylEx

    run_dir = tmp_path / "run"
    shutil.copytree(evil_run / "run", run_dir)
    lines = (run_dir / "stats.jsonl").read_text().splitlines()
    kept = [line for line in lines if json.loads(line).get("step", 0) < StylEx.load(run_dir).step]
    (run_dir / "stats.jsonl").write_text("\n".join(kept) + "\n")  # the log ends before the checkpoint
    run("report", run_dir, "--out", tmp_path / "report", "--top-k", 1, "--slider-images", 1, "--frames", 3,
        "--explanations", 0, "--no-generate", "--quiet")  # fmt: skip
    html = (tmp_path / "report" / "index.html").read_text()
    step = StylEx.load(run_dir).step
    assert f"{step} steps" in html and f"{json.loads(kept[-1])['step']} steps" not in html


def test_the_report_draws_only_the_missing_pictures(evil_run, tmp_path, monkeypatch):
    """One missing GIF made the report draw every attribute AttFind kept (66 s for 4 missing in a user's run)."""
    import stylex.explain.attributes as attributes

    attfind = tmp_path / "attfind"
    shutil.copytree(evil_run / "run" / "attfind", attfind)
    next((attfind / "attributes").rglob("01_*.gif")).unlink()
    drawn = []
    real = attributes.render_attributes
    monkeypatch.setattr(attributes, "render_attributes", lambda *a, **k: drawn.extend(real(*a, **k)) or drawn)
    run("report", evil_run / "run", "--attributes", attfind, "--out", tmp_path / "report", "--top-k", 2,
        "--slider-images", 1, "--frames", 3, "--explanations", 0, "--quiet")  # fmt: skip
    assert len(drawn) == 2 and {p.suffix for p in drawn} == {".png", ".gif"}, drawn  # one attribute's strip and GIF
    img = tmp_path / "report" / "img"
    stills = sorted(str(p.relative_to(img)) for p in img.rglob("a*_still.png"))  # one per animation, none per frame
    assert stills and stills == sorted(str(p.relative_to(img))[:-5] + "_still.png" for p in img.rglob("a??.webp"))
    assert not list((tmp_path / "report" / "img").rglob("*.gif"))


def test_hint_commands_quote_the_paths_they_name(evil_run, tmp_path):
    """`stylex serve "run $(touch PWNED)"` printed `stylex attfind --model .../run $(touch PWNED) --fast 50`:
    pasted, it ran the command substitution (and a space split the path)."""
    import shlex

    odd = tmp_path / "my run $(touch PWNED); x"
    shutil.copytree(evil_run / "run", odd, ignore=shutil.ignore_patterns("attfind"))
    said = run("serve", odd, "--port", 0, ok=False).output
    assert f"stylex attfind --model {shlex.quote(str(odd))} --fast 50" in said, said
    assert "'" in said and not (tmp_path / "PWNED").exists()


def _trickle(port: int, head: bytes, trickle: bytes, seconds: float = 10.0) -> float | None:
    """Send `head`, then `trickle` one byte every 0.2 s; the seconds until the server closed the connection (None:
    still open after `seconds`)."""
    import socket

    conn = socket.create_connection(("127.0.0.1", port))
    start = time.monotonic()
    try:
        conn.sendall(head)
        for byte in trickle:
            if time.monotonic() - start > seconds:
                return None
            try:
                conn.sendall(bytes([byte]))
            except OSError:
                return time.monotonic() - start
            threading.Event().wait(0.2)
            conn.setblocking(False)
            try:
                conn.recv(65536)  # a reply (a 408) or the close: the server is done with the request
                return time.monotonic() - start
            except BlockingIOError:
                pass
            finally:
                conn.setblocking(True)
        return None
    finally:
        conn.close()


def test_a_trickling_client_loses_its_slot_at_the_request_deadline(monkeypatch):
    """One header byte every 20 s kept a slot for good (the timeout was per read), and so did bytes trickled inside
    one header line or one body (a buffered readline makes many socket reads): every read from the socket now
    keeps the request's deadline; a body's grows with its length once the token is checked."""
    from stylex.explain import viewer as viewer_module
    from stylex.explain.viewer import make_server

    monkeypatch.setattr(viewer_module, "REQUEST_DEADLINE", 1.0)
    monkeypatch.setattr(viewer_module, "REQUEST_TIMEOUT", 1.0)
    monkeypatch.setattr(viewer_module, "MIN_BODY_RATE", 10**9)
    server = make_server(None, "127.0.0.1", 0, quiet=True, token=None)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        line = b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        cases = {
            "request line, byte by byte": (b"", line),
            "inside one header line": (line + b"X-Pad: ", b"a" * 100),
            "a body": (b"POST /api/render HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                       b"Content-Length: 1000\r\n\r\n", b"{" * 1000),
        }  # fmt: skip
        for name, (head, trickle) in cases.items():
            closed = _trickle(port, head, trickle)
            assert closed is not None and closed < 5, (name, closed)
    finally:
        server.shutdown()
        server.server_close()


def test_the_viewer_refuses_odd_lengths_and_deep_json(viewer_url):
    """A Content-Length of a superscript digit and 30,000 nested brackets were 500s with tracebacks."""
    import http.client

    port = int(viewer_url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.putrequest("POST", "/api/upload")
    for k, v in {**AUTH, "Content-Type": "application/octet-stream", "Content-Length": "\u00b2"}.items():
        conn.putheader(k, v.encode("utf-8") if k == "Content-Length" else v)
    conn.endheaders()
    assert conn.getresponse().status == 411
    conn.close()
    deep = b"[" * 30000 + b"]" * 30000
    assert _authed(viewer_url + "/api/render", deep, "application/json")[0] == 400
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.putrequest("POST", "/api/upload")
    for k, v in {**AUTH, "Content-Type": "application/octet-stream", "Content-Length": "9" * 5000}.items():
        conn.putheader(k, v)
    conn.endheaders()
    assert conn.getresponse().status == 413, "int() of 5,000 digits raised: a 500"
    conn.close()


def test_fast_attfind_under_inference_mode_says_why(evil_run):
    """Fast AttFind inside torch.inference_mode() ended in "element 0 of tensors does not require grad"."""
    import torch

    import stylex
    from stylex.data import load_dataset

    model, classifier = stylex.load_run(evil_run / "run")
    x = load_dataset(evil_run / "data", resolution=16, progress=False).tensors(list(range(4)))
    with torch.inference_mode(), pytest.raises(stylex.StylexError, match="fast mode ranks coordinates by gradients"):
        stylex.AttFind(model, classifier, top_k=1, fast=4, progress=False).run(x)
    with torch.no_grad():
        assert stylex.AttFind(model, classifier, top_k=1, fast=4, progress=False).run(x).classes


def test_a_few_changed_reconstructions_are_counted_not_called_a_failed_model():
    """The shipped pepper-64 model keeps the decision on 38 of its 40 samples (0.950; the class medians 1.000),
    and its demo report told every user that the model "does not yet reconstruct what the classifier looks at".
    Two changed images are now counted; a real shortfall still gets the warning."""
    from stylex.explain.report import consistency_note

    few = consistency_note(0.95, 1.0, 40)
    assert few.startswith("2 of the 40 reconstructions change the classifier's decision") and "train" not in few
    assert consistency_note(0.95, 1.0, "?").startswith("5% of the reconstructions")
    for ours, median in ((0.85, 1.0), (0.7, 0.75), (0.89, 0.95)):
        assert "does not yet reconstruct what the classifier looks at" in consistency_note(ours, median, 40)
    assert consistency_note(1.0, 1.0, 40) is None and consistency_note(0.96, 0.9, 40) is None
    assert consistency_note(None, 1.0, 40) is None and consistency_note(0.5, None, 40) is None


def test_gifs_share_one_palette_and_keep_their_colours(tmp_path):
    """save_gif gave each frame its own dithered palette: the demo's 20 GIFs were 18 MB (the dither noise changes
    every pixel of every frame) and colours flickered between frames. One palette for all frames, no dither: the
    same frames, their colours within a few levels, a repeated frame stored as the same picture."""
    import numpy as np
    from PIL import Image, ImageSequence

    from stylex.explain.render import save_gif

    rng = np.random.default_rng(0)
    base = np.linspace(0, 255, 96 * 64 * 3).reshape(64, 96, 3)  # a smooth gradient, then a moving noisy square
    frames = []
    for i in range(8):
        a = base.copy()
        a[10:30, 5 + 8 * i : 25 + 8 * i] = rng.integers(0, 256, (20, 20, 3))
        frames.append(Image.fromarray(a.astype(np.uint8)))
    frames.append(frames[0])
    path = save_gif(frames, tmp_path / "a.gif", duration_ms=50)
    gif = Image.open(path)
    assert gif.n_frames == 9 and gif.info["loop"] == 0
    read = [np.asarray(f.convert("RGB"), dtype=np.int16) for f in ImageSequence.Iterator(gif)]
    assert np.array_equal(read[0], read[-1])
    smooth = [np.abs(r[40:] - np.asarray(f)[40:]).mean() for r, f in zip(read, frames, strict=True)]
    assert max(smooth) < 4, smooth  # mean error per channel on the gradient, in 0..255 levels
    dithered = tmp_path / "b.gif"
    own = [f.convert("P", palette=Image.Palette.ADAPTIVE) for f in frames]  # the former way
    own[0].save(dithered, format="GIF", save_all=True, append_images=own[1:], duration=50, loop=0)
    assert path.stat().st_size < dithered.stat().st_size


def test_a_shipped_models_data_name_is_not_looked_up_in_the_working_folder(tmp_path, monkeypatch):
    """The shipped cards name their training data by name only; a file of that name in the folder the report was
    made from was shown as the model's training data."""
    from stylex.explain.report import _source_data

    monkeypatch.chdir(tmp_path)
    (tmp_path / "digits-32.npz").write_bytes(b"")
    assert (
        _source_data("digits-32.npz")
        == "digits-32.npz (on the machine that trained it; the model ships only its samples)"
    )
    assert _source_data(str(tmp_path / "digits-32.npz")) == str(tmp_path / "digits-32.npz")
    assert _source_data(str(tmp_path / "gone.npz")).endswith(
        "(on the machine that trained it; the model ships only its samples)"
    )
    assert _source_data(None) == "not recorded"


def test_progress_bars_in_a_log_and_without_stderr(monkeypatch, capsys):
    """In a log: whole lines, none for short work, at most one per PLAIN_SECONDS however often the bar refreshes;
    with no stderr at all (pythonw): no bar and no crash."""
    import sys

    import stylex.progress as progress

    monkeypatch.setattr(progress, "PLAIN_SECONDS", 3600.0)
    for _ in progress.progress_bar(range(50), desc="short"):
        pass
    assert capsys.readouterr().err == ""
    clock = iter(range(0, 10_000, 7))  # each read of the bar's clock is 7 s later
    monkeypatch.setattr(progress, "PLAIN_SECONDS", 60.0)
    bar = progress.progress_bar(total=100, desc="long", unit="edit")
    bar._time = lambda: float(next(clock))
    bar.start_t = bar.last_print_t = bar._time()
    for i in range(100):
        bar.set_description_str(f"long {i}")  # a refresh each step, as evaluate's stages make
        bar.update(1)
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) >= 2 and all("long" in ln and "\r" not in ln for ln in lines)
    seconds = [int(m) * 60 + int(s) for m, s in (re.search(r"\[(\d+):(\d+)<", ln).groups() for ln in lines)]
    assert seconds[0] >= 60 and min(b - a for a, b in zip(seconds[:-2], seconds[1:-1], strict=True)) >= 60, seconds
    assert lines[-1].startswith("long 99: 100% 100/100"), "the last line is the end, however soon after"
    monkeypatch.setattr(sys, "stderr", None)
    assert list(progress.progress_bar(range(3), desc="nowhere")) == [0, 1, 2]
