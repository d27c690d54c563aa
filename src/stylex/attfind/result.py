"""AttFind's typed result: per class, the ranked StyleSpace attributes; JSON round trip (`attributes.json`)."""

from __future__ import annotations

import json
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from stylex.errors import StylexError, counted, option
from stylex.models.stylespace import coordinate_name

DIRECTIONS = ("min", "max")  # direction index d of an edit: toward the coordinate's minimum / maximum

RESULT_FORMAT = "stylex.attfind.attributes"
RESULT_VERSION = 1


@dataclass(frozen=True)
class Attribute:
    """One selected attribute: moving conv style `flat_index` toward its min or max raises the class's logit.

    Attributes:
        rank: 1 = selected first.
        flat_index: conv style coordinate j (see `StyleLayout.flat_index`).
        layer: conv layer (0 = the first modulated conv).
        layer_name: e.g. "b16.conv0".
        channel: channel within the layer.
        direction: "min" or "max" (the edit moves s_j toward the coordinate's minimum / maximum over the images).
        mean_effect: mean (clipped at 0) effect on the class score over the images still active when it was picked.
        flip_rate: share of the images not predicted as the class that this edit alone turns into the class.
        tint: k when the coordinate is tint style k of a model with tint styles (`StyleLayout.tint_index`), else None.
    """

    rank: int
    flat_index: int
    layer: int
    layer_name: str
    channel: int
    direction: str
    mean_effect: float
    flip_rate: float
    tint: int | None = None

    @classmethod
    def of(cls, layout, rank: int, j: int, d: int, mean_effect: float, flip_rate: float) -> Attribute:
        """The attribute that moves flat coordinate `j` of `layout` in direction `d` (0 = min, 1 = max)."""
        coord = layout.coord(j)
        return cls(
            rank=rank,
            flat_index=j,
            layer=coord.layer,
            layer_name=layout.names[coord.layer],
            channel=coord.channel,
            direction=DIRECTIONS[d],
            mean_effect=round(float(mean_effect), 6),
            flip_rate=round(float(flip_rate), 6),
            tint=layout.tint_index(j),
        )

    @property
    def direction_index(self) -> int:
        """0 for "min", 1 for "max"."""
        return 0 if self.direction == "min" else 1

    @property
    def edit(self) -> tuple[int, int]:
        """(flat_index, direction_index), the form `edit_styles` takes."""
        return self.flat_index, self.direction_index

    def name(self) -> str:
        """The coordinate, e.g. "b16.conv0[12]" or "toRGB0[65] (tint 1)"."""
        return coordinate_name(self.layer_name, self.channel, self.tint)

    def describe(self) -> str:
        return f"{self.name()} -> {self.direction}"


@dataclass
class ClassAttributes:
    """The attributes of one target class.

    Attributes:
        class_index: y.
        class_name: its name.
        num_images: images not predicted as y (those the search and sufficiency use).
        attributes: ranked, best first.
        sufficiency: share of those images that become y when all `attributes` are applied together; None when
            not computed or when no image qualifies.
        counting: per attribute, the images still below the drop-out threshold when it was picked (AttFind's
            greedy search; None for the baselines and for files from before it was recorded). Once it is 0 the
            search ranks by the mean effect over every image: the drop-out no longer diversifies the picks.
        stability: per attribute, the share of bootstrap resamples of the images in which the search picks it
            again among the top K (`selection.rank_stability`; None when not computed).
        resampled_ranks: per attribute, the quartiles [q1, median, q3] of its rank over those resamples (K + 1
            where a resample does not pick it).
    """

    class_index: int
    class_name: str
    num_images: int
    attributes: list[Attribute]
    sufficiency: float | None = None
    counting: list[int] | None = None
    stability: list[float] | None = None
    resampled_ranks: list[list[int]] | None = None

    def stability_note(self, i: int) -> str | None:
        """Attribute i's stability in words, e.g. "picked again in 87% of image resamples; middle half: ranks 3-5"."""
        if self.stability is None or self.resampled_ranks is None or i >= len(self.stability):
            return None
        q1, _, q3 = self.resampled_ranks[i]
        k = len(self.attributes)  # a resample picks as many as the list holds: a rank past it means not picked
        if q1 > k:
            span = "not picked"
        elif q3 > k:
            span = f"rank {q1} to not picked"
        else:
            span = f"rank {q1}" if q1 == q3 else f"ranks {q1}-{q3}"
        return f"picked again in {self.stability[i]:.0%} of image resamples; middle half: {span}"

    def rank_span(self, i: int) -> str:
        """Attribute i's middle half of resampled ranks for the summary's column: "3-5", "2", "4-none"."""
        assert self.resampled_ranks is not None, "no resampled ranks: rank_stability did not run"
        q1, _, q3 = self.resampled_ranks[i]
        ends = [str(q) if q <= len(self.attributes) else "none" for q in (q1, q3)]
        return ends[0] if ends[0] == ends[1] else "-".join(ends)

    @property
    def dropout_spent_at(self) -> int | None:
        """The first rank picked with no image below the threshold (None if the drop-out lasted or is unknown)."""
        if not self.counting:
            return None
        return next((rank for rank, n in enumerate(self.counting, start=1) if n == 0), None)

    def dropout_note(self, threshold: Any) -> str | None:
        """One sentence for the summary and the report when the drop-out was spent before the last pick."""
        spent = self.dropout_spent_at
        if spent is None:
            return None
        last = len(self.attributes)
        ranks = f"rank {spent} is" if spent == last else f"ranks {spent}-{last} are"
        return (
            f"every image had passed the drop-out threshold ({threshold}) by rank {spent}, so {ranks} ranked by the "
            f"mean effect over all {self.num_images} images (a larger {option('--threshold', 'threshold')}, nearer "
            "the classifier's logit margins, keeps images counting longer)"
        )

    @property
    def edits(self) -> list[tuple[int, int]]:
        return [a.edit for a in self.attributes]


@dataclass
class AttFindResult:
    """Attributes per class, the settings that produced them and figures about the run.

    Attributes:
        classes: one entry per class, in class order.
        settings: top_k, threshold, shift_size, score ("logit" or "one_vs_all"), num_images, ...
        sufficiency: overall sufficiency@K: flips over all (image, target class) pairs; None if not computed.
        stats: facts about the effects computation (mode, seconds, fast-mode agreement, ...).
        effects: the `Effects` table this came from (kept in memory, never serialised).
    """

    classes: list[ClassAttributes]
    settings: dict[str, Any] = field(default_factory=dict)
    sufficiency: float | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    effects: Any = field(default=None, repr=False, compare=False)

    def __repr__(self) -> str:
        """One line, for a notebook (the whole table is `summary()`)."""
        suff = "n/a" if self.sufficiency is None else f"{self.sufficiency:.3f}"
        found = ", ".join(f"{c.class_name!r}: {len(c.attributes)}" for c in self.classes[:5])
        more = f", ... ({len(self.classes)} classes)" if len(self.classes) > 5 else ""
        effects = "none" if self.effects is None else f"{list(self.effects.effects.shape)}"
        return (
            f"AttFindResult(attributes {{{found}{more}}}, sufficiency@{self.settings.get('top_k', 'K')} {suff}, "
            f"{self.settings.get('num_images', '?')} images, effects {effects})"
        )

    @property
    def class_names(self) -> list[str]:
        return [c.class_name for c in self.classes]

    @property
    def include_rgb(self) -> bool:
        """Whether the search included the toRGB styles (flat indices past the conv styles); results from
        before this setting existed searched conv styles only."""
        return bool(self.settings.get("include_rgb", False))

    def for_class(self, name_or_index: str | int) -> ClassAttributes:
        """The entry of a class: an int is its index, a str its name (else its index written out)."""
        if isinstance(name_or_index, str):
            found = [c for c in self.classes if c.class_name == name_or_index]
            if not found and name_or_index.strip().isdigit():
                found = [c for c in self.classes if c.class_index == int(name_or_index)]
        else:
            found = [c for c in self.classes if c.class_index == name_or_index]
        if found:
            return found[0]
        raise StylexError(f"no class {name_or_index!r} in the AttFind result; classes are {self.class_names}.")

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": RESULT_FORMAT,
            "version": RESULT_VERSION,
            "settings": self.settings,
            "sufficiency": self.sufficiency,
            "stats": self.stats,
            "classes": [asdict(c) for c in self.classes],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: Any, source: str = "AttFind result") -> AttFindResult:
        """Inverse of `to_dict`; anything else ends in a StylexError naming `source`."""
        if not isinstance(d, dict) or d.get("format") != RESULT_FORMAT:
            raise StylexError(f"{source} is not an AttFind attributes file; run `stylex attfind` to write one.")
        try:
            version = _int(d.get("version", 0), "version")
            if version > RESULT_VERSION:
                raise StylexError(f"{source} was written by a newer stylex (format {version}); upgrade stylex.")
            classes = [_class_attributes(c) for c in _list(d["classes"], "classes")]
            settings, stats = d.get("settings", {}), d.get("stats", {})
            if not isinstance(settings, dict) or not isinstance(stats, dict):
                raise ValueError("settings and stats must be objects")
            sufficiency = _optional_float(d.get("sufficiency"), "sufficiency")
        except (KeyError, TypeError, ValueError) as e:
            raise StylexError(f"{source} is incomplete or malformed ({e}); re-run `stylex attfind`.") from None
        return cls(classes, settings, sufficiency, stats)

    @classmethod
    def from_json(cls, text: str, source: str = "AttFind result") -> AttFindResult:
        try:
            d = json.loads(text)
        except (ValueError, RecursionError) as e:  # JSONDecodeError, or too deep / long numbers
            raise StylexError(f"{source} is not valid JSON ({e}); re-run `stylex attfind`.") from None
        return cls.from_dict(d, source)

    def save(self, path: str | Path) -> None:
        """Write `to_json()` atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> AttFindResult:
        """The result `save` wrote to `path` (an attributes.json), without its effect table: `stylex.load_attfind`
        reads a folder with both."""
        path = Path(path)
        if not path.is_file():
            folder = shlex.quote(str(path.parent))
            raise StylexError(f"{path} does not exist; run `stylex attfind --out {folder}` first.")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise StylexError(f"{path} is not a readable text file ({e}); re-run `stylex attfind`.") from None
        return cls.from_json(text, str(path))

    def summary(self, max_classes: int | None = None) -> str:
        """A table per class for the terminal; with `max_classes`, the first that many classes and a line for the
        rest."""
        lines = []
        k = self.settings.get("top_k", "K")
        shown = self.classes if max_classes is None else self.classes[:max_classes]
        for c in shown:
            if not c.attributes:
                lines.append(
                    f"class {c.class_name!r}: no attributes ({counted(c.num_images, 'image')} not predicted as it)"
                )
                continue
            suff = "n/a" if c.sufficiency is None else f"{c.sufficiency:.3f}"
            found, images = counted(len(c.attributes), "attribute"), counted(c.num_images, "image")
            lines.append(f"class {c.class_name!r}: {found} from {images} not predicted as it; sufficiency@{k} {suff}")
            stable = c.stability is not None and c.resampled_ranks is not None
            lines.append(
                f"  {'rank':>4s}  {'layer':<10s}{'channel':>8s}{'flat':>7s}  {'dir':<4s}{'effect':>8s}{'flips':>7s}"
                + (f"{'stable':>8s}  ranks" if stable else "")
            )
            for i, a in enumerate(c.attributes):
                line = (
                    f"  {a.rank:4d}  {a.layer_name:<10s}{a.channel:8d}{a.flat_index:7d}  {a.direction:<4s}"
                    f"{a.mean_effect:8.3f}{a.flip_rate:7.3f}"
                )
                if stable and c.stability is not None:
                    line += f"{c.stability[i]:8.2f}  {c.rank_span(i)}"
                if a.tint is not None:
                    line += f"  (tint {a.tint})"
                lines.append(line.rstrip())
            note = c.dropout_note(self.settings.get("threshold", "?"))
            if note is not None:
                lines.append(f"  note: {note}")
        if len(shown) < len(self.classes):
            lines.append(
                f"... and {counted(len(self.classes) - len(shown), 'more class')} (attributes.json holds every class; "
                "`stylex report` shows them)"
            )
        if any(c.attributes for c in self.classes):
            effect = self.settings.get("mean_effect")
            if not isinstance(effect, str):
                score = "one-vs-all log-odds" if self.settings.get("score") == "one_vs_all" else "logit"
                effect = f"mean change of the class's {score} on the images still counting when it was picked"
            lines.append(
                f"effect: {effect}; flips: share of the images not predicted as the class that this edit alone turns "
                "into it"
            )
        if any(c.stability is not None for c in self.classes):
            lines.append(
                f"stable: share of {self.settings.get('stability_resamples', '?')} bootstrap resamples of the images "
                f"in which the search picks the attribute again among the top {k}; ranks: the middle half of its "
                "ranks there ('none': not picked)"
            )
        dropped, unstable = self.stats.get("unstable_dropped"), self.settings.get("unstable_filter")
        if isinstance(dropped, int) and isinstance(unstable, list) and len(unstable) == 2:
            total = self.settings.get("num_images")
            of = f" of {total}" if isinstance(total, int) else ""
            lines.append(
                f"unstable-image filter: left out {counted(dropped, 'image')}{of} with more than {unstable[1]} logit "
                f"changes above {unstable[0]}; the images per class above are of those kept (sufficiency counts all)"
            )
        rejected = self.stats.get("discriminator_rejected")
        if isinstance(rejected, dict):
            skipped = "; ".join(f"{name!r}: {', '.join(coords)}" for name, coords in rejected.items() if coords)
            lines.append(
                f"discriminator filter (threshold {self.settings.get('discriminator_threshold', '?')}): "
                + (f"skipped {skipped}" if skipped else "skipped nothing")
            )
        if self.sufficiency is not None:
            lines.append(f"sufficiency@{k} overall: {self.sufficiency:.3f}")
        return "\n".join(lines)


# --- strict readers for `AttFindResult.from_dict`: each raises ValueError / TypeError naming the field ------------


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    return value


def _float(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {value!r}")
    return float(value)


def _optional_float(value: Any, name: str) -> float | None:
    return None if value is None else _float(value, name)


def _str(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {value!r}")
    return value


def _list(value: Any, name: str) -> list:
    if not isinstance(value, list):
        raise TypeError(f"{name} must be a list, got {type(value).__name__}")
    return value


def _attribute(a: Any) -> Attribute:
    if not isinstance(a, dict):
        raise TypeError(f"an attribute must be an object, got {type(a).__name__}")
    direction = a["direction"]
    if direction not in ("min", "max"):
        raise ValueError(f"direction must be 'min' or 'max', got {direction!r}")
    return Attribute(
        rank=_int(a["rank"], "rank"),
        flat_index=_int(a["flat_index"], "flat_index"),
        layer=_int(a["layer"], "layer"),
        layer_name=_str(a["layer_name"], "layer_name"),
        channel=_int(a["channel"], "channel"),
        direction=direction,
        mean_effect=_float(a["mean_effect"], "mean_effect"),
        flip_rate=_float(a["flip_rate"], "flip_rate"),
        tint=None if a.get("tint") is None else _int(a["tint"], "tint"),
    )


def _class_attributes(c: Any) -> ClassAttributes:
    if not isinstance(c, dict):
        raise TypeError(f"a class entry must be an object, got {type(c).__name__}")
    attributes = [_attribute(a) for a in _list(c["attributes"], "attributes")]
    per_attribute = {
        "counting": _optional_list(c, "counting", _int),
        "stability": _optional_list(c, "stability", _float),
        "resampled_ranks": _optional_list(c, "resampled_ranks", _quartiles),
    }
    for name, values in per_attribute.items():  # one per attribute: the summary and the report index them so
        if values is not None and len(values) != len(attributes):
            raise ValueError(f"{name} has {len(values)} entries for {len(attributes)} attributes")
    return ClassAttributes(
        class_index=_int(c["class_index"], "class_index"),
        class_name=_str(c["class_name"], "class_name"),
        num_images=_int(c["num_images"], "num_images"),
        attributes=attributes,
        sufficiency=_optional_float(c.get("sufficiency"), "sufficiency"),
        **per_attribute,
    )


def _quartiles(value: Any, name: str) -> list[int]:
    ranks = [_int(q, name) for q in _list(value, name)]
    if len(ranks) != 3:
        raise ValueError(f"{name}: each entry holds 3 ranks [q1, median, q3], got {ranks}")
    return ranks


def _optional_list(c: dict, name: str, item) -> list | None:
    """c[name] read item by item with `item(value, name)`; None when absent (files from before the field existed)."""
    return None if c.get(name) is None else [item(v, name) for v in _list(c[name], name)]
