"""A benchmark figure: a measured value, the baseline measured in the same run, their ratio,
and the target (a limit on the value or on the ratio) printed beside them, never divided by."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

MIB = 1 << 20


class Unit(Enum):
    SECONDS = "s"
    BYTES = "bytes"

    def show(self, value: float) -> str:
        if self is Unit.BYTES:
            return f"{value / MIB:.1f} MiB"
        return f"{value:.2f} s"


@dataclass(frozen=True)
class Target:
    """`value <= limit` (on_ratio False, in the figure's unit) or `ratio <= limit`."""

    limit: float
    on_ratio: bool
    source: str  # where the target was set (an issue), so it can be questioned

    def met(self, value: float, ratio: float) -> bool:
        return (ratio if self.on_ratio else value) <= self.limit

    def show(self, unit: Unit) -> str:
        return f"≤ {self.limit:g}×" if self.on_ratio else f"≤ {unit.show(self.limit)}"


@dataclass(frozen=True)
class Figure:
    name: str
    value: float
    unit: Unit
    baseline_name: str
    baseline: float
    targets: tuple[Target, ...] = ()

    @property
    def ratio(self) -> float:
        return self.value / self.baseline

    @classmethod
    def from_json(cls, data: dict) -> Figure:
        unit = Unit(data["unit"])
        return cls(
            data["name"],
            data["value"],
            unit,
            data["baseline"]["name"],
            data["baseline"]["value"],
            tuple(Target(t["limit"], t["on"] == "ratio", t["source"]) for t in data["targets"]),
        )

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "value": round(self.value, 3),
            "unit": self.unit.value,
            "baseline": {"name": self.baseline_name, "value": round(self.baseline, 3)},
            "ratio": round(self.ratio, 4),
            "targets": [
                {
                    "limit": t.limit,
                    "on": "ratio" if t.on_ratio else "value",
                    "met": t.met(self.value, self.ratio),
                    "source": t.source,
                }
                for t in self.targets
            ],
        }


def table(figures: list[Figure]) -> str:
    """A Markdown table: it reads on a terminal and pastes into docs/ as it is."""
    rows = [("figure", "measured", "baseline (same run)", "ratio", "target")]
    for f in figures:
        targets = ", ".join(
            f"{t.show(f.unit)} ({'met' if t.met(f.value, f.ratio) else 'NOT met'})"
            for t in f.targets
        )
        rows.append(
            (
                f.name,
                f.unit.show(f.value),
                f"{f.baseline_name}: {f.unit.show(f.baseline)}",
                f"{f.ratio:.3f}",
                targets or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
