"""`stylex serve`: a live viewer on the standard library's http.server (no web framework).

Pick one of a few dataset images or upload one, see its reconstruction and the classifier's probabilities, and
move the top AttFind attributes with sliders; each move asks the server for the edited image and its
probabilities (JSON, images as base64 PNG).

Security, as a viewer on a researcher's machine needs it:
- binds 127.0.0.1 by default; requests whose Host is not one of the viewer's names are refused (a web page
  elsewhere cannot reach the viewer through DNS rebinding), and so are cross-origin POSTs. On a loopback address
  the names are the loopback ones; on another (`--host 0.0.0.0` for colleagues) also the machine's host name and
  its addresses; on any, the names given with `--allowed-host` (NAME, or NAME:PORT for a tunnel's own port);
- a token, like Jupyter's: `stylex serve` makes a random one (or takes `--token` / `$STYLEX_VIEWER_TOKEN`) and
  prints the address with `?token=...`; opening it sets an HttpOnly, SameSite=Strict cookie and drops the token
  from the address bar (the browser's history may still keep the address opened). Every request needs the
  cookie (or `Authorization: Bearer TOKEN`); a wrong or missing one gets a 401 (a short page for a browser).
  The request log hides queries. Plain HTTP carries the token unencrypted: on a network you do not trust, reach
  the viewer through an SSH tunnel or a TLS proxy (`--allowed-host NAME:PORT` for one on another port);
- connections time out after `REQUEST_TIMEOUT` seconds idle and at most `MAX_CONNECTIONS` are served at once;
  at most `MAX_DECODES` uploads are decoded at once;
- no request path reaches the file system: the page is one in-memory string, the rest is a JSON API;
- uploads are size-checked (`MAX_UPLOAD_BYTES`) before they are read, decoded from memory with Pillow after a
  format and pixel-count check (never written to disk), and anything that is not an image gets a 400;
- every string from the run (class names, file names) reaches the page as JSON and is inserted with
  `textContent`, never as HTML; the page's Content-Security-Policy allows only its own inline script and style.
"""

from __future__ import annotations

import functools
import io
import ipaddress
import json
import os
import re
import secrets
import shlex
import sys
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import torch

from stylex.errors import StylexError
from stylex.explain.html import csp_policy, esc, page

MAX_UPLOAD_BYTES = 5 * 1024 * 1024
"""Largest upload accepted (bytes); larger requests get a 413 before their body is read."""
MAX_JSON_BYTES = 64 * 1024
"""Largest JSON request body (bytes)."""
MAX_PIXELS = 4096 * 4096
"""Largest decoded image (width x height) an upload may declare; guards against decompression bombs (a 170 KB PNG
of 6300 x 6300 pixels took 2 GB to decode under the earlier 40-megapixel cap)."""
MAX_DECODES = 2
"""Uploads decoded at the same time (each may take a few hundred MB while it is decoded)."""
MAX_CONNECTIONS = 64
"""Connections served at once; more are closed at once (each holds a thread)."""
REQUEST_TIMEOUT = 30
"""Seconds a connection may sit idle (or wait for one read) before it is closed."""
REQUEST_DEADLINE = 60
"""Seconds a request's line and headers may take to arrive, idle wait before them included: a client trickling one
byte every 20 s held its slot for good under the per-read timeout alone. Checked at every read from the socket."""
MIN_BODY_RATE = 16 * 1024
"""Bytes per second a request body must keep up on average once the token is checked: the deadline grows by its
length at this rate (a 5 MB upload over a slow tunnel may take 5 minutes)."""
_DECODING = threading.BoundedSemaphore(MAX_DECODES)
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")
"""Pillow formats an upload may have."""
MAX_UPLOADS = 16
"""Uploaded images kept in memory (least recently used dropped first)."""
POST_ROUTES = ("/api/render", "/api/upload")
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9._~-]{16,256}")
"""A viewer token: long enough not to be guessed, and plain enough to sit in an address and a cookie unescaped."""


class HTTPError(StylexError):
    """A request the viewer refuses; `status` is the HTTP status code."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


# ------------------------------------------------------------------------------------------------ decoding
def decode_image(data: bytes, resolution: int) -> np.ndarray:
    """Uploaded bytes -> uint8 RGB [R, R, 3], decoded in memory (centre-cropped and resized like the data).

    Raises:
        HTTPError: 400 when the bytes are empty, not an image of an accepted format, or too many pixels.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    from stylex.data.dataset import _center_square, _resize, _to_rgb8

    if not data:
        raise HTTPError(400, "the upload is empty; choose an image file.")
    try:
        with _DECODING, Image.open(io.BytesIO(data)) as im:
            if im.format not in IMAGE_FORMATS:
                raise HTTPError(400, f"{im.format} images are not accepted; upload one of {', '.join(IMAGE_FORMATS)}.")
            width, height = im.size
            if width < 1 or height < 1 or width * height > MAX_PIXELS:
                raise HTTPError(400, f"the image is {width}x{height} pixels; upload one under {MAX_PIXELS:,} pixels.")
            im.load()
            a = _to_rgb8(ImageOps.exif_transpose(im))
    except HTTPError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError):
        raise HTTPError(400, f"the upload is not a readable image; upload a {', '.join(IMAGE_FORMATS)} file.") from None
    return np.ascontiguousarray(_resize(_center_square(a), resolution))


def _png_uri(x: torch.Tensor, min_size: int = 192) -> str:
    """One image [3, R, R] in [-1, 1] -> a PNG data URI, nearest-neighbour upscaled to at least min_size px."""
    from PIL import Image

    from stylex.data.convert import to_uint8
    from stylex.explain.html import png_data_uri

    a = to_uint8(x[None].float().cpu())[0]  # [R, R, 3]
    scale = max(1, -(-min_size // a.shape[0]))
    img = Image.fromarray(a).resize((a.shape[1] * scale, a.shape[0] * scale), Image.Resampling.NEAREST)
    return png_data_uri(img)


# ------------------------------------------------------------------------------------------------ the model side
@dataclass
class Slider:
    """One slider: a conv style coordinate; position -1 moves it to its minimum, +1 to its maximum.

    Attributes:
        coord: flat coordinate j.
        name: e.g. "b8.conv0[12]".
        raises_min, raises_max: the classes whose attribute moves the coordinate that way.
    """

    coord: int
    name: str
    raises_min: list[str]
    raises_max: list[str]


@dataclass
class _Image:
    x: torch.Tensor  # [1, 3, R, R]
    s: Any  # StyleVector, batch 1
    noise: list[torch.Tensor]
    input_uri: str
    rec_uri: str
    probs_input: list[float]
    probs_rec: list[float]


class Viewer:
    """The viewer's state and its three verbs (`info`, `render`, `upload`), independent of HTTP.

    Args:
        model: the `StylEx` model; classifier: images [N, 3, R, R] in [-1, 1] -> logits [N, K].
        result: the `AttFindResult` (class names and attributes); effects: its `Effects` (s_min, s_max [S]).
        images: dataset images to offer [M, 3, R, R] in [-1, 1] (M may be 0).
        keys: M dataset indices (they fix each image's noise, as in AttFind); labels: M captions.
        classes: M class names (or None) of the images, for their short accessible names ("image 3, labelled cat").
        sliders_per_class: the top attributes of every class that get a slider (shared coordinates merged).
        seed: the noise seed (AttFind's).
        title: shown at the top of the page.
    """

    def __init__(
        self,
        model,
        classifier,
        result,
        effects,
        images: torch.Tensor,
        keys: list[int],
        labels: list[str],
        sliders_per_class: int = 5,
        seed: int = 0,
        title: str = "",
        classes: list[str | None] | None = None,
    ):
        assert images.ndim == 4 and len(images) == len(keys) == len(labels), (tuple(images.shape), len(keys))
        self.model, self.C, self.result, self.effects = model, classifier, result, effects
        self.device = next(model.parameters()).device
        self.s_min, self.s_max = effects.s_min.to(self.device), effects.s_max.to(self.device)
        self.names = result.class_names
        self.seed, self.title = seed, title
        self.sliders = self._make_sliders(sliders_per_class)
        self._images = images
        self._keys, self._labels = list(keys), list(labels)
        self._classes = list(classes) if classes is not None else [None] * len(labels)
        self._cache: OrderedDict[str, _Image] = OrderedDict()
        self._uploads: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    def _make_sliders(self, per_class: int) -> list[Slider]:
        layout = self.model.G.layout
        by_coord: dict[int, Slider] = {}
        order: list[int] = []
        for rank in range(per_class):  # interleave the classes: every class's best attribute comes first
            for c in self.result.classes:
                if rank >= len(c.attributes):
                    continue
                a = c.attributes[rank]
                if a.flat_index not in by_coord:
                    name = layout.describe(a.flat_index)
                    by_coord[a.flat_index] = Slider(a.flat_index, name, [], [])
                    order.append(a.flat_index)
                side = by_coord[a.flat_index].raises_max if a.direction == "max" else by_coord[a.flat_index].raises_min
                if c.class_name not in side:
                    side.append(c.class_name)
        return [by_coord[j] for j in order]

    # --- verbs ---------------------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """What the page needs to draw itself: classes, images with thumbnails, sliders, limits."""
        with self._lock:  # the thumbnails are torch work (see `render`)
            images = [
                {
                    "id": f"i{k}",
                    "label": label,
                    "name": f"image {k + 1}" + (f", labelled {cls}" if cls is not None else ""),
                    "thumb": _png_uri(self._images[k], 64),
                }
                for k, (label, cls) in enumerate(zip(self._labels, self._classes, strict=True))
            ]
        sliders = [
            {"id": i, "name": sl.name, "raises_min": sl.raises_min, "raises_max": sl.raises_max}
            for i, sl in enumerate(self.sliders)
        ]
        return {
            "title": self.title,
            "classes": list(self.names),
            "images": images,
            "sliders": sliders,
            "max_upload_bytes": MAX_UPLOAD_BYTES,
            "resolution": self.model.resolution,
        }

    @torch.no_grad()
    def render(self, image: object, values: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The image `image` with the sliders at `values`.

        Args:
            image: an id from `info()["images"]` or from `upload` (as a request sent it: a non-string is refused).
            values: {slider id (as a string or int): position in [-1, 1]}; missing sliders stay at 0.

        Returns:
            {"image", "input", "reconstruction", "edited" (PNG data URIs), "probs_input", "probs_reconstruction",
            "probs" (of the edited image, [K]), "predicted" (argmax of probs)}.
        """
        from stylex.explain.slider import slide

        positions = self._positions(values or {})
        with self._lock:  # all torch work under the lock: at Ctrl-C the server waits for it (see `serve`)
            entry = self._entry(image)
            s = slide(entry.s, positions, self.s_min, self.s_max) if positions else entry.s
            x_edit = self.model.G.synthesis(s, entry.noise)  # [1, 3, R, R]
            probs = self.C(x_edit).float().softmax(dim=1)[0].cpu()  # [K]
            edited, predicted = _png_uri(x_edit[0]), int(probs.argmax())
            probs_list = [round(float(p), 6) for p in probs]
        return {
            "image": image,
            "input": entry.input_uri,
            "reconstruction": entry.rec_uri,
            "edited": edited,
            "probs_input": entry.probs_input,
            "probs_reconstruction": entry.probs_rec,
            "probs": probs_list,
            "predicted": predicted,
        }

    def upload(self, data: bytes) -> dict[str, Any]:
        """Decode an uploaded image, keep it in memory and render it (as `render`, plus its new id)."""
        from stylex.data import to_tensor

        if len(data) > MAX_UPLOAD_BYTES:
            raise HTTPError(413, f"the upload is {len(data):,} bytes; the limit is {MAX_UPLOAD_BYTES:,}.")
        pixels = decode_image(data, self.model.resolution)[None].copy()  # [1, R, R, 3] uint8 (Pillow, numpy)
        token = "u" + secrets.token_hex(8)
        with self._lock:
            self._uploads[token] = to_tensor(pixels)  # [1, 3, R, R]
            while len(self._uploads) > MAX_UPLOADS:
                old, _ = self._uploads.popitem(last=False)
                self._cache.pop(old, None)
        return self.render(token)

    # --- helpers -------------------------------------------------------------------------------------------
    def _positions(self, values: Mapping[str, Any]) -> dict[int, float]:
        if not isinstance(values, Mapping) or len(values) > len(self.sliders):
            raise HTTPError(400, "values must map slider ids to positions.")
        out: dict[int, float] = {}
        for key, v in values.items():
            try:
                i = int(key)
                v = float(v)
            except (TypeError, ValueError, OverflowError):
                raise HTTPError(400, f"slider {key!r:.40} has no numeric position.") from None
            if not 0 <= i < len(self.sliders) or not np.isfinite(v):
                raise HTTPError(400, f"slider {key!r:.40} does not exist or its position is not finite.")
            if v != 0:
                out[self.sliders[i].coord] = max(-1.0, min(1.0, v))
        return out

    def _entry(self, image: object) -> _Image:
        """The cached encoding of an image id (call with the lock held)."""
        from stylex.attfind.effects import image_noise
        from stylex.attfind.run import encode_images

        if not isinstance(image, str):
            raise HTTPError(400, "image must be an image id string.")
        if image in self._cache:
            self._cache.move_to_end(image)
            return self._cache[image]
        if image in self._uploads:
            x, key = self._uploads[image], -1
        elif re.fullmatch(r"i[0-9]{1,9}", image) and int(image[1:]) < len(self._keys):
            k = int(image[1:])
            x, key = self._images[k : k + 1], self._keys[k]
        else:
            raise HTTPError(404, "no such image; pick one from the list or upload it again.")
        x = x.to(self.device)
        s = encode_images(self.model, self.C, x)
        noise = image_noise(self.model.G, [key], self.seed, self.device)
        x_rec = self.model.G.synthesis(s, noise)
        probs = self.C(torch.cat([x, x_rec])).float().softmax(dim=1).cpu()  # [2, K]
        entry = _Image(
            x,
            s,
            noise,
            _png_uri(x[0]),
            _png_uri(x_rec[0]),
            [round(float(p), 6) for p in probs[0]],
            [round(float(p), 6) for p in probs[1]],
        )
        self._cache[image] = entry
        while len(self._cache) > 64:
            self._cache.popitem(last=False)
        return entry


def load_viewer(
    run_dir: str | os.PathLike,
    attributes_dir: str | os.PathLike | None = None,
    data: str | os.PathLike | None = None,
    num_images: int = 12,
    sliders_per_class: int = 5,
    classifier=None,
    device: str = "cpu",
) -> Viewer:
    """A `Viewer` for a run and its AttFind folder (default RUN/attfind).

    Args:
        run_dir: the run folder; attributes_dir: the `stylex attfind` output folder.
        data: images to offer (default AttFind's data, else the run's); without it only uploads are possible.
        num_images: how many dataset images the picker offers (AttFind's images first).
        sliders_per_class: top attributes per class that get a slider.
        classifier: a loaded classifier instead of the one the run recorded.
    """
    from stylex.attfind.effects import Effects
    from stylex.attfind.result import AttFindResult
    from stylex.attfind.run import ATTRIBUTES_FILE, EFFECTS_FILE, bind_results, pick_indices, round_robin
    from stylex.data import load_dataset
    from stylex.pipeline import load_run
    from stylex.zoo import PREFIX, is_shipped, model_name, resolve_model

    run_dir = resolve_model(run_dir)
    model, classifier = load_run(run_dir, classifier, device)
    folder = Path(attributes_dir) if attributes_dir else run_dir / "attfind"
    if not (folder / ATTRIBUTES_FILE).is_file() or not (folder / EFFECTS_FILE).is_file():
        if is_shipped(run_dir):  # the package's folder is not written into: the results go elsewhere
            raise StylexError(
                f"no AttFind results in {folder}; run `stylex attfind --model "
                f"{shlex.quote(PREFIX + run_dir.resolve().parent.name)} --fast 50 --out DIR` first, then pass "
                "--attributes DIR."
            )
        raise StylexError(
            f"no AttFind results in {folder}; run `stylex attfind --model {shlex.quote(str(run_dir))} --fast 50` first "
            "(or pass --attributes)."
        )
    result = AttFindResult.load(folder / ATTRIBUTES_FILE)
    effects = Effects.load(folder / EFFECTS_FILE)
    bind_results(model, result, effects, folder, run_dir)
    R = model.resolution
    images, keys, labels, classes = torch.zeros(0, 3, R, R), [], [], []
    source = data or effects.meta.get("data") or model.run_info.get("data")
    if source and Path(source).exists():
        ds = load_dataset(source, resolution=R, progress=False)
        attfind_keys = effects.meta.get("indices") if str(Path(source).resolve()) == effects.meta.get("data") else None
        keys = [int(k) for k in (attfind_keys or pick_indices(len(ds), len(ds), 0)) if 0 <= int(k) < len(ds)]
        if ds.labels is not None:  # the classes in turn (the first 12 of a dataset in class order held 3 of 10)
            keys = [keys[i] for i in round_robin([int(ds.labels[k]) for k in keys], len(keys))]
        keys = keys[:num_images]
        images = ds.tensors(keys)
        ds = ds.relabelled(result.class_names)  # by name where the names match, else by position as training took them
        names = result.class_names
        for k in keys:
            name = ds.filenames[k] if ds.filenames else f"image {k}"
            known = ds.labels is not None and int(ds.labels[k]) < len(names)
            classes.append(names[int(ds.labels[k])] if known and ds.labels is not None else None)
            labels.append(f"{k}: {name}" + (f" ({classes[-1]})" if known else ""))
    return Viewer(
        model,
        classifier,
        result,
        effects,
        images,
        keys,
        labels,
        sliders_per_class=sliders_per_class,
        seed=int(effects.meta.get("seed", 0)),
        title=f"StylEx viewer: {model_name(model.run_info, run_dir)}",
        classes=classes,
    )


# ------------------------------------------------------------------------------------------------ HTTP
def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Handler(BaseHTTPRequestHandler):
    """Routes: GET / (the page), GET /api/info, POST /api/render (JSON), POST /api/upload (raw image bytes)."""

    server_version = "stylex-viewer"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    timeout = REQUEST_TIMEOUT  # an idle connection is closed, not held open with its thread
    disable_nagle_algorithm = True  # headers and body leave at once: Nagle held each keep-alive reply ~40 ms

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # the standard buffered socket file, replaced by one whose every read keeps the deadline
        self._socket_in = _DeadlineSocketIO(self.connection)
        self.rfile = io.BufferedReader(self._socket_in)

    def handle_one_request(self) -> None:
        self._socket_in.deadline = time.monotonic() + REQUEST_DEADLINE
        super().handle_one_request()

    # --- responses -----------------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, content_type: str, extra: Mapping[str, str] | None = None) -> None:
        self.connection.settimeout(REQUEST_TIMEOUT)  # the reply gets its own time, not what the request left
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode("utf-8"), "application/json; charset=utf-8", headers)

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        self.close_connection = True
        self._json(status, {"error": message}, headers)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        if not self.server.quiet:  # type: ignore[attr-defined]
            line = re.sub(r"\?[^\s\"]*", "?[query hidden]", format % args)  # the page's query carries the token
            sys.stderr.write(f"{self.address_string()} {line}\n")

    # --- checks --------------------------------------------------------------------------------------------
    def _cookie_name(self) -> str:
        port = self.server.server_address[1]  # type: ignore[index]  # a TCP server's (host, port)
        return f"stylex-viewer-{port}"  # cookies ignore the port: one per viewer

    def _authorised(self) -> bool:
        """The token check, answering a refusal with a 401."""
        if self._has_token():
            return True
        self._refuse("this viewer needs its token: open the address with ?token=... that `stylex serve` printed "
                     "(or send Authorization: Bearer TOKEN).")  # fmt: skip
        return False

    def _has_token(self) -> bool:
        """Whether the request carries the token (always, when the viewer has none): the cookie, or an
        `Authorization: Bearer` header."""
        token: str | None = self.server.token  # type: ignore[attr-defined]
        if token is None:
            return True
        given = []
        for header in self.headers.get_all("Cookie") or []:  # by hand: SimpleCookie drops a whole header over one
            for pair in header.split(";"):  # value it dislikes (another localhost app's cookie locked users out)
                name, _, value = pair.strip().partition("=")
                if name == self._cookie_name():
                    given.append(value.strip())
        scheme, _, value = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            given.append(value.strip())
        return any(secrets.compare_digest(g.encode(), token.encode()) for g in given)

    def _refuse(self, message: str) -> None:
        """A 401: a short page for a browser, JSON for a script."""
        self.close_connection = True
        extra = {"WWW-Authenticate": 'Bearer realm="stylex viewer"'}
        if "text/html" in self.headers.get("Accept", ""):
            # styled like the viewer, and allowed by its own policy (a bare "default-src 'none'" filled the
            # console with refusals of the page's own inline parts)
            body = page("StylEx viewer: token needed", f"<h1>Token needed</h1><p>{esc(message)}</p>", _TOKEN_CSS, "",
                        img_src="data:")  # fmt: skip
            policy = csp_policy(_TOKEN_CSS, "", img_src="data:") + "; frame-ancestors 'none'"
            self._send(401, body.encode("utf-8"), "text/html; charset=utf-8",
                       {**extra, "Content-Security-Policy": policy})  # fmt: skip
        else:
            self._json(401, {"error": message}, extra)

    def _token_in_query(self) -> bool:
        """GET /?token=T with the right T: set the cookie and send the browser to / (the token leaves the address
        bar). A wrong T with a valid cookie (an old link) falls through to the page. True when answered here."""
        token: str | None = self.server.token  # type: ignore[attr-defined]
        url = urlsplit(self.path)
        given = parse_qs(url.query).get("token")
        if token is None or not given or url.path != "/":
            return False
        if not secrets.compare_digest(given[-1].encode(), token.encode()):
            if self._has_token():  # an old link, a valid cookie: the page
                return False
            self._refuse("wrong token: copy the address `stylex serve` printed.")
            return True
        cookie = f"{self._cookie_name()}={token}; Path=/; HttpOnly; SameSite=Strict"
        self._send(303, b"", "text/plain; charset=utf-8", {"Location": "/", "Set-Cookie": cookie})
        return True

    def _allowed(self, post: bool) -> bool:
        hosts = self.server.allowed_hosts  # type: ignore[attr-defined]
        host = self.headers.get("Host", "")
        if host not in hosts:
            self._error(403, f"this viewer answers only requests addressed to its own names, not {host!r} (start it "
                        "with --allowed-host NAME, or NAME:PORT for a tunnel on another port).")  # fmt: skip
            return False
        origin = self.headers.get("Origin")
        if post and origin is not None and origin not in (f"http://{host}", f"https://{host}"):  # a TLS proxy: https
            self._error(403, "cross-origin requests are refused.")
            return False
        return True

    def _body(self, limit: int, types: tuple[str, ...]) -> bytes:
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type not in types:
            raise HTTPError(415, f"send the body as {' or '.join(types)}.")
        length = self.headers.get("Content-Length")
        if length is None or not (length.isascii() and length.isdigit()):
            raise HTTPError(411, "the request needs a Content-Length.")
        if len(length) > 15:  # int() of 5,000 digits raises
            raise HTTPError(413, f"the request body is larger than the limit of {limit:,} bytes.")
        body_time = REQUEST_TIMEOUT + min(int(length), limit) / MIN_BODY_RATE  # by its size (the token is checked)
        self._socket_in.deadline = max(self._socket_in.deadline or 0.0, time.monotonic() + body_time)
        if int(length) > limit:
            if int(length) <= 4 * limit:  # read and drop it, so that the client gets the 413 rather than a reset
                left = int(length)
                while left > 0 and (chunk := self.rfile.read(min(left, 1 << 16))):
                    left -= len(chunk)
            raise HTTPError(413, f"the request body is {int(length):,} bytes; the limit is {limit:,}.")
        return self.rfile.read(int(length))

    # --- routes --------------------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if not self._allowed(post=False) or self._token_in_query() or not self._authorised():
            return
        path = urlsplit(self.path).path
        viewer: Viewer = self.server.viewer  # type: ignore[attr-defined]
        if path == "/":
            html_text, policy = _page()
            self._send(200, html_text.encode("utf-8"), "text/html; charset=utf-8", {"Content-Security-Policy": policy})
        elif path == "/api/info":
            self._guarded(viewer.info)
        elif path in POST_ROUTES:
            self._error(405, f"{path} takes POST requests.", {"Allow": "POST"})
        else:
            self._error(404, "not found")

    def do_POST(self) -> None:  # noqa: N802
        if not self._allowed(post=True) or not self._authorised():
            return
        path = urlsplit(self.path).path
        viewer: Viewer = self.server.viewer  # type: ignore[attr-defined]
        if path == "/api/render":

            def render() -> dict[str, Any]:
                try:
                    request = json.loads(self._body(MAX_JSON_BYTES, ("application/json",)))
                except (ValueError, RecursionError):  # RecursionError: 30,000 nested brackets
                    raise HTTPError(400, "the request is not valid JSON.") from None
                if not isinstance(request, dict):
                    raise HTTPError(400, 'send {"image": ID, "values": {SLIDER: POSITION}}.')
                return viewer.render(request.get("image"), request.get("values") or {})

            self._guarded(render)
        elif path == "/api/upload":
            types = ("application/octet-stream", "image/png", "image/jpeg", "image/gif", "image/bmp", "image/webp")
            self._guarded(lambda: viewer.upload(self._body(MAX_UPLOAD_BYTES, types)))
        else:
            self._error(404, "not found")

    def _guarded(self, produce) -> None:
        try:
            data = produce()
        except HTTPError as e:
            self._error(e.status, str(e))
        except TimeoutError:  # the body did not arrive within the request's time
            self._error(408, "the request took too long to arrive.")
        except StylexError as e:
            self._error(400, str(e))
        except Exception:
            traceback.print_exc(file=sys.stderr)
            self._error(500, "internal error; see the viewer's terminal.")
        else:
            self._json(200, data)


class _DeadlineSocketIO(io.RawIOBase):
    """A connection's incoming bytes, each read from the socket bounded by what is left of the request's deadline
    (`deadline`, set per request by the handler) as well as by the per-read timeout. Bounding whole `readline`
    calls was not enough: Python's buffered reads make many socket reads inside one call."""

    def __init__(self, sock: Any) -> None:
        super().__init__()
        self._sock = sock
        self.deadline: float | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("request deadline passed")
            self._sock.settimeout(min(REQUEST_TIMEOUT, left))
        return self._sock.recv_into(buffer)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the listen backlog (socketserver's 5 reset connections of a burst of 20)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request: Any, client_address: Any) -> None:
        """At most MAX_CONNECTIONS threads: a connection beyond them gets a 503 and is closed at once."""
        if not self._slots.acquire(blocking=False):
            try:
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n"
                                b"Retry-After: 5\r\n\r\n")  # fmt: skip
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-reply (a closed tab, `curl | head`) is routine: no traceback for it."""
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
            return
        super().handle_error(request, client_address)


def make_server(
    viewer: Viewer,
    host: str = "127.0.0.1",
    port: int = 8000,
    quiet: bool = False,
    allowed_hosts: Sequence[str] = (),
    token: str | None = "auto",
) -> ThreadingHTTPServer:
    """An HTTP server for `viewer` (not started: call `serve_forever`, e.g. in a thread; port 0 = any free port).

    Only requests whose Host header is one of the viewer's names are answered (see the module docstring);
    `allowed_hosts` adds names (e.g. a DNS alias colleagues use, or NAME:PORT for a tunnel on another port) to those
    of the machine. Every request needs the `token` (see the module docstring): "auto" makes a random one (the
    server's `token` attribute holds it); None serves without one.
    """
    token = new_token() if token == "auto" else token
    check_token(token)
    try:
        server = _Server((host, port), _Handler)
    except OSError as e:
        raise StylexError(f"cannot listen on {host}:{port} ({e.strerror or e}); pick another --port.") from None
    server.viewer = viewer  # type: ignore[attr-defined]
    server.quiet = quiet  # type: ignore[attr-defined]
    server.token = token  # type: ignore[attr-defined]
    real_port = server.server_address[1]
    with_port = {h for h in allowed_hosts if re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[^:\[\]]+):\d+", h)}  # a tunnel's
    names = {host, "localhost", "127.0.0.1", "[::1]", *(set(allowed_hosts) - with_port)}  # own port: "name:9000"
    if not _is_loopback(host):
        names |= _machine_names()
    names = {f"[{n}]" if ":" in n and not n.startswith("[") else n for n in names}  # IPv6 in a Host header
    allowed = {f"{h}:{real_port}" for h in names} | (names if real_port == 80 else set()) | with_port
    server.allowed_hosts = allowed  # type: ignore[attr-defined]
    return server


def check_token(token: str | None, named: str | None = None) -> None:
    """Refuse a token that is not `TOKEN_PATTERN`; `named`: where it came from (an environment variable)."""
    if token is None or TOKEN_PATTERN.fullmatch(token):
        return
    rule = "a viewer token has 16 to 256 characters, each a letter, a digit or one of . _ ~ -"
    if named is not None:
        raise StylexError(f"{named} has {len(token)} characters; {rule} (unset it and the viewer makes one).")
    raise StylexError(f"{rule} (got {len(token)} characters); leave it out and the viewer makes one.")


def new_token() -> str:
    """A random viewer token (32 URL-safe characters, 192 bits)."""
    return secrets.token_urlsafe(24)


def _machine_names() -> set[str]:
    """This machine's host names and addresses, as colleagues' browsers may address a viewer bound beyond loopback."""
    import socket

    names = {socket.gethostname(), socket.getfqdn()}
    for name in list(names):
        try:
            canonical, aliases, addresses = socket.gethostbyname_ex(name)
        except OSError:
            continue
        names |= {canonical, *aliases, *addresses}
    for family, probe in ((socket.AF_INET, "192.0.2.1"), (socket.AF_INET6, "2001:db8::1")):
        try:  # the address this machine would reach others from (a UDP "connect" sends nothing)
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.connect((probe, 9))
                names.add(s.getsockname()[0])
        except OSError:
            pass
    return {n for n in names if n}


def serve(
    run_dir: str | os.PathLike,
    host: str = "127.0.0.1",
    port: int = 8000,
    attributes_dir: str | os.PathLike | None = None,
    data: str | os.PathLike | None = None,
    num_images: int = 12,
    classifier=None,
    device: str = "cpu",
    quiet: bool = False,
    allowed_hosts: Sequence[str] = (),
    token: str | None = "auto",
) -> None:
    """Serve the live viewer of a run until Ctrl-C (see `load_viewer` for the arguments; `allowed_hosts`: see
    `make_server`). `token`: "auto" makes a random one, printed in the address; None serves without one."""
    check_token(None if token == "auto" else token)  # before the slow part
    viewer = load_viewer(run_dir, attributes_dir, data, num_images, classifier=classifier, device=device)
    server = make_server(viewer, host, port, quiet, allowed_hosts, token)
    token = server.token  # type: ignore[attr-defined]
    wildcard = host in ("0.0.0.0", "::")  # every address: not one a browser opens everywhere
    shown = "127.0.0.1" if wildcard else f"[{host}]" if ":" in host else host
    query = "" if token is None else f"?token={token}"
    print(f"StylEx viewer on http://{shown}:{server.server_address[1]}/{query} (Ctrl-C stops it)", flush=True)
    if wildcard:  # the one to give colleagues is the machine's name
        import socket

        print(f"colleagues open http://{socket.gethostname()}:{server.server_address[1]}/{query}", flush=True)
    if not _is_loopback(host):
        names = sorted({h.rsplit(":", 1)[0] for h in server.allowed_hosts})  # type: ignore[attr-defined]
        who = ("anyone who can reach it can use the viewer (no token)" if token is None else
               "anyone who has the token and can reach it can use the viewer; plain HTTP carries the token "
               "unencrypted, so on a network you do not trust use an SSH tunnel or a TLS proxy")  # fmt: skip
        print(f"warning: {host} is not a loopback address; {who}. It answers requests addressed to "
              f"{', '.join(names)}; add others with --allowed-host NAME.", flush=True)  # fmt: skip
    elif token is None:
        print("warning: no token: every user of this machine can use the viewer.", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        # a request thread still in torch when the interpreter exits aborted it ("terminate called without an
        # active exception"): wait for the one under way (renders hold the lock), and let no other start
        viewer._lock.acquire(timeout=30)


# ------------------------------------------------------------------------------------------------ the page
_CSS = """
body{--bar:80px;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1280px;
padding:0 18px 30px;color:#222;background:#fafafa}h1{font-size:22px;margin:14px 0 4px}
h2{font-size:17px;margin:12px 0 6px}
main{display:grid;grid-template-columns:230px minmax(0,1fr) 330px;gap:16px;align-items:start}main>section{min-width:0}
section{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px 12px}
#thumbs{display:flex;flex-wrap:wrap;gap:6px}#thumbs button{padding:2px;border:2px solid transparent;background:#fff;
cursor:pointer}#thumbs button.active{border-color:#1f77b4}#thumbs img{width:64px;height:64px;display:block}
img{image-rendering:pixelated}.imgs{display:flex;flex-wrap:wrap;gap:10px}figure{margin:0}
.imgs img{width:176px;height:176px;border:1px solid #ddd;background:#eee;display:block}
figcaption{font-size:13px;color:#555;text-align:center}
table{border-collapse:collapse;margin-top:10px}th,td{border:1px solid #ddd;padding:3px 8px;font-size:13px;
text-align:left}td.p{min-width:120px;white-space:nowrap}.pbar{display:inline-block;height:9px;background:#1f77b4;margin-right:6px;
vertical-align:middle}tr.pred th{background:#eef3fb}
.slider{margin:8px 0 12px}.slider .name{font-weight:600;font-size:13px}.slider input{width:100%}
.ends{display:flex;justify-content:space-between;font-size:11px;color:#555;gap:8px}
.sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
.mark{font-weight:400;font-size:11px;color:#333}#message{color:#a40000;font-size:13px;min-height:1em;overflow-wrap:anywhere}.small{font-size:12px;color:#555}
button#reset{font-size:12px}input[type=file]{max-width:100%}
@media (max-width:1200px){main{grid-template-columns:176px minmax(0,1fr) 290px}body{--bar:48px}td.p{min-width:0}
.imgs img{width:144px;height:144px}#picture{overflow-x:auto}}
@media (max-width:900px){main{grid-template-columns:1fr}main>section{min-width:0;overflow-x:auto}
body{padding:0 8px 30px;--bar:24px}td.p{min-width:0}th,td{padding:3px 5px}.imgs img{width:112px;height:112px}}
"""

_JS = """
"use strict";
var state = {info: null, image: null, values: {}, busy: false, pending: false, renders: 0};

function el(tag, cls, text) {
  var e = document.createElement(tag);
  if (cls) { e.className = cls; }
  if (text !== undefined) { e.textContent = text; }
  return e;
}
function message(text) { document.getElementById("message").textContent = text || ""; }
function call(path, body, type) {
  var init = body === undefined ? {} : {method: "POST", headers: {"Content-Type": type}, body: body};
  return fetch(path, init).then(function (r) {
    return r.json().then(function (d) {
      if (!r.ok) { throw new Error(d.error || ("HTTP " + r.status)); }
      return d;
    });
  });
}
function probCell(p) {
  var td = el("td", "p");
  var bar = el("span", "pbar");
  bar.style.width = "calc(var(--bar) * " + p.toFixed(4) + ")";
  td.appendChild(bar);
  td.appendChild(document.createTextNode(p.toFixed(3)));
  td.dataset.value = String(p);
  return td;
}
function describe(id, what, probs) {
  var k = probs.indexOf(Math.max.apply(null, probs));
  var image = document.getElementById(id);
  image.alt = what + ", classified " + state.info.classes[k] + " (" + probs[k].toFixed(2) + ")";
}
function show(d) {
  var thumb = document.querySelector("#thumbs button.active");
  var label = thumb ? thumb.getAttribute("aria-label") : "the image";
  document.getElementById("input").src = d.input;
  document.getElementById("recon").src = d.reconstruction;
  document.getElementById("edited").src = d.edited;
  describe("input", label, d.probs_input);
  describe("recon", "reconstruction of " + label, d.probs_reconstruction);
  describe("edited", "edited " + label, d.probs);
  var body = document.getElementById("probs");
  body.replaceChildren();
  state.info.classes.forEach(function (name, k) {
    var tr = el("tr", k === d.predicted ? "pred" : "");
    var th = el("th", "", name);
    if (k === d.predicted) { th.appendChild(el("span", "mark", " (predicted)")); }
    tr.appendChild(th);
    tr.appendChild(probCell(d.probs_input[k]));
    tr.appendChild(probCell(d.probs_reconstruction[k]));
    var cell = probCell(d.probs[k]);
    cell.classList.add("edited");
    tr.appendChild(cell);
    body.appendChild(tr);
  });
  var k = d.predicted;
  document.getElementById("announce").textContent = "edited " + label + ": classified " + state.info.classes[k] +
    " (" + d.probs[k].toFixed(2) + ")";
  state.renders += 1;
  document.body.dataset.renders = String(state.renders);
}
function render() {
  if (!state.image) { return; }
  if (state.busy) { state.pending = true; return; }
  state.busy = true;
  document.getElementById("picture").setAttribute("aria-busy", "true");
  call("/api/render", JSON.stringify({image: state.image, values: state.values}), "application/json")
    .then(function (d) { message(""); show(d); })
    .catch(function (e) { message(e.message); })
    .finally(function () {
      state.busy = false;
      document.getElementById("picture").removeAttribute("aria-busy");
      if (state.pending) { state.pending = false; render(); }
    });
}
function select(id) {
  state.image = id;
  document.querySelectorAll("#thumbs button").forEach(function (b) {
    b.classList.toggle("active", b.dataset.id === id);
    b.setAttribute("aria-pressed", String(b.dataset.id === id));
  });
  render();
}
function addThumb(id, label, name, src) {
  var b = el("button");
  b.type = "button";
  b.dataset.id = id;
  b.title = label;
  b.setAttribute("aria-label", name);
  b.setAttribute("aria-pressed", "false");
  var img = el("img");
  img.src = src;
  img.alt = "";
  b.appendChild(img);
  b.addEventListener("click", function () { select(id); });
  document.getElementById("thumbs").appendChild(b);
}
function buildSliders(info) {
  var list = document.getElementById("sliders");
  info.sliders.forEach(function (s) {
    var box = el("div", "slider");
    box.appendChild(el("div", "name", s.name));
    var input = el("input");
    input.type = "range";
    input.min = "-1";
    input.max = "1";
    input.step = "0.05";
    input.value = "0";
    input.dataset.id = String(s.id);
    input.setAttribute("aria-label", "attribute " + s.name);
    var ends = el("div", "ends");
    ends.id = "ends" + s.id;
    var low = "min" + (s.raises_min.length ? ": raises " + s.raises_min.join(", ") : "");
    var high = "max" + (s.raises_max.length ? ": raises " + s.raises_max.join(", ") : "");
    ends.appendChild(el("span", "", low));
    var pos = el("output", "", "0.00");
    ends.appendChild(pos);
    ends.appendChild(el("span", "", high));
    input.setAttribute("aria-describedby", ends.id);
    var spoken = function (v) {
      return v.toFixed(2) + (v > 0 ? " toward " + high : v < 0 ? " toward " + low : " (unedited)");
    };
    input.setAttribute("aria-valuetext", spoken(0));
    input.addEventListener("input", function () {
      var v = Number(input.value);
      pos.textContent = v.toFixed(2);
      input.setAttribute("aria-valuetext", spoken(v));
      if (v === 0) { delete state.values[s.id]; } else { state.values[s.id] = v; }
      render();
    });
    box.appendChild(input);
    box.appendChild(ends);
    list.appendChild(box);
  });
  if (!info.sliders.length) { list.appendChild(el("p", "small", "AttFind selected no attributes.")); }
}
document.getElementById("reset").addEventListener("click", function () {
  document.querySelectorAll("#sliders input").forEach(function (i) {
    i.value = "0";
    i.dispatchEvent(new Event("input"));
  });
  document.querySelectorAll("#sliders output").forEach(function (o) { o.textContent = "0.00"; });
  state.values = {};
  render();
});
document.getElementById("upload").addEventListener("change", function (ev) {
  var file = ev.target.files[0];
  if (!file) { return; }
  if (file.size > state.info.max_upload_bytes) {
    message("The file is larger than " + state.info.max_upload_bytes + " bytes.");
    return;
  }
  call("/api/upload", file, "application/octet-stream").then(function (d) {
    addThumb(d.image, file.name, "uploaded image " + file.name, d.input);
    state.image = d.image;
    select(d.image);
  }).catch(function (e) { message(e.message); });
});
call("/api/info").then(function (info) {
  state.info = info;
  document.getElementById("title").textContent = info.title;
  document.title = info.title;
  info.images.forEach(function (im) { addThumb(im.id, im.label, im.name, im.thumb); });
  buildSliders(info);
  if (info.images.length) { select(info.images[0].id); } else { message("No dataset images: upload one."); }
}).catch(function (e) { message(e.message); });
"""

_BODY = """
<header><h1 id="title">StylEx viewer</h1>
<p class="small">Pick or upload an image; move the sliders to push StyleSpace coordinates toward their minimum or
maximum over the AttFind images and watch the classifier's probabilities.</p></header>
<main>
<section><h2>Images</h2><div id="thumbs"></div>
<p><label class="small">Upload (PNG, JPEG, GIF, BMP, WEBP or TIFF, up to 5 MB):
<input type="file" id="upload" accept="image/*"></label></p>
<p id="message" role="status"></p></section>
<section id="picture"><h2>Image</h2><p id="announce" class="sr" aria-live="polite"></p><div class="imgs">
<figure><img id="input" alt="input"><figcaption>input</figcaption></figure>
<figure><img id="recon" alt="reconstruction"><figcaption>reconstruction</figcaption></figure>
<figure><img id="edited" alt="edited"><figcaption>edited</figcaption></figure></div>
<table><thead><tr><th>class</th><th>input</th><th>reconstruction</th><th>edited</th></tr></thead>
<tbody id="probs"></tbody></table></section>
<section><h2>Attributes</h2><button type="button" id="reset">reset all</button><div id="sliders"></div></section>
</main>
"""


_TOKEN_CSS = (
    'body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:40px auto;max-width:640px;'
    "padding:0 18px;color:#222;background:#fafafa}h1{font-size:22px}"
)


@functools.cache
def _page() -> tuple[str, str]:
    """(the page, its Content-Security-Policy header); static: everything dynamic arrives as JSON."""
    policy = csp_policy(_CSS, _JS, img_src="data:", connect_src="'self'") + "; frame-ancestors 'none'"
    return page("StylEx viewer", _BODY, _CSS, _JS, img_src="data:", connect_src="'self'"), policy
