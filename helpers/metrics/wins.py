"""Head-to-head counts: on how many images does ours beat a baseline, per metric, and one plain sentence.

The rules of the one head-to-head (:func:`helpers.bench.aggregate.head_to_head`: the benchmark summary, and the
compare / demo report through :mod:`helpers.bench.compare`):

* **win / tie / loss** per image and metric, in the metric's direction (:data:`~helpers.metrics.METRICS`:
  higher or lower is better). A **tie** is two values that are equal at the metric's displayed precision
  (``Metric.digits`` decimals: PSNR 0.01 dB, ColorVideoVDP 0.001 JOD, SSIMULACRA 2 0.01, SSIM 0.0001, ...);
  a tie counts as neither a win nor a loss.
* Only images where both codecs produced a file (both fit the budget) and both values exist are counted.
* A **majority** decides the verdict: ours *wins* against a baseline on a metric when it wins on more than
  half of those images, *loses* when it loses on more than half, otherwise the result is *split*.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .registry import METRICS, get

__all__ = ["Tally", "join_words", "outcome", "tally", "verdict"]


def outcome(
    key: str, ours: float | None, theirs: float | None, digits: int | None = None, higher_is_better: bool | None = None
) -> str | None:
    """``"win"``, ``"tie"`` or ``"loss"`` for ours against theirs on metric ``key``; None when a value is missing.

    Tie: equal after rounding both to ``digits`` decimals (default: the metric's displayed precision).
    ``digits`` and ``higher_is_better`` default to the registry's (:data:`~helpers.metrics.METRICS`)."""
    if ours is None or theirs is None or isinstance(ours, str) or isinstance(theirs, str):
        return None
    if key in METRICS and not METRICS[key].score:
        return None  # a reported measure (detail retention), not a quality score: never a win or a loss
    if digits is None or higher_is_better is None:
        m = get(key)
        digits = m.digits if digits is None else digits
        higher_is_better = m.higher_is_better if higher_is_better is None else higher_is_better
    a, b = round(float(ours), digits), round(float(theirs), digits)
    if a == b:
        return "tie"
    return "win" if (a > b) == higher_is_better else "loss"


@dataclass(frozen=True)
class Tally:
    """Wins, ties and losses of ours against one baseline on one metric, over ``n`` images."""

    wins: int = 0
    ties: int = 0
    losses: int = 0

    @property
    def n(self) -> int:
        return self.wins + self.ties + self.losses

    @property
    def verdict(self) -> str | None:
        """``"wins"`` (more than half of the images), ``"loses"`` (more than half lost), ``"split"``; None if n = 0."""
        if self.n == 0:
            return None
        if 2 * self.wins > self.n:
            return "wins"
        if 2 * self.losses > self.n:
            return "loses"
        return "split"

    def cell(self) -> str:
        """``"3/13"`` (ours better on 3 of 13 images), ``"3/13, 1 tie"``; ``"n/a"`` without images."""
        if self.n == 0:
            return "n/a"
        return f"{self.wins}/{self.n}" + (f", {self.ties} tie{'s' * (self.ties != 1)}" if self.ties else "")


def tally(
    key: str,
    pairs: Iterable[tuple[float | None, float | None]],
    digits: int | None = None,
    higher_is_better: bool | None = None,
) -> Tally:
    """Count :func:`outcome` over (ours, theirs) pairs; pairs with a missing value are skipped."""
    w = t = lo = 0
    for ours, theirs in pairs:
        o = outcome(key, ours, theirs, digits, higher_is_better)
        w += o == "win"
        t += o == "tie"
        lo += o == "loss"
    return Tally(w, t, lo)


def _names(keys: Sequence[str], names: Mapping[str, str] | None) -> list[str]:
    return [(names or {}).get(k) or (METRICS[k].short if k in METRICS else k) for k in keys]


def join_words(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _clause(results: Mapping[str, Mapping[str, Tally]], names: Mapping[str, str] | None) -> tuple[str, str]:
    """The predicate for one ours variant (``results[baseline][metric] = Tally``), after a singular subject
    and after a plural one."""
    measured = {b: [k for k, t in per.items() if t.n] for b, per in results.items()}
    measured = {b: ks for b, ks in measured.items() if ks}
    if not measured:
        return "has no image in common with any baseline", "have no image in common with any baseline"
    wins: dict[str, list[str]] = {}
    level: dict[str, list[str]] = {}
    lost = False
    for b, ks in measured.items():
        for k in ks:
            t = results[b][k]
            if t.verdict == "wins":
                wins.setdefault(b, []).append(k)
            elif t.verdict == "split":
                level.setdefault(b, []).append(k)
            else:
                lost = True

    def which(d: dict[str, list[str]]) -> str:
        parts = []
        for b, ks in d.items():
            if len(ks) == len(measured[b]):
                n = max(results[b][k].n for k in ks)
                parts.append(f"{b} on every metric ({n} image{'s' * (n != 1)})")
            else:
                parts.append(
                    f"{b} on " + join_words([f"{n} ({results[b][k].cell()})" for k, n in zip(ks, _names(ks, names))])
                )
        return join_words(parts)

    if not wins and not level:
        target = f"every baseline ({join_words(list(measured))})" if len(measured) > 1 else next(iter(measured))
        return f"loses to {target} on every metric", f"lose to {target} on every metric"
    single, plural = [], []
    if wins:
        single.append(f"wins against {which(wins)}")
        plural.append(f"win against {which(wins)}")
    if level:
        single.append(f"is level with {which(level)}")
        plural.append(f"are level with {which(level)}")
    tail = "everywhere else" if lost else "nowhere"
    return (", ".join(single) + f" and loses {tail}", ", ".join(plural) + f" and lose {tail}")


def verdict(
    results: Mapping[str, Mapping[str, Mapping[str, Tally]]], metric_names: Mapping[str, str] | None = None
) -> str:
    """One plain sentence (without a lead-in or full stop) for ``results[ours][baseline][metric] = Tally``:
    against which baselines, on which metrics, each ours variant wins, is level or loses (majority of the
    images both fit, see the module docstring); variants with the same outcome share a clause.
    ``metric_names``: display names by key (default: the registry's short names, ``Metric.short``).

    >>> verdict({"ours": {"jpeg": {"psnr": Tally(0, 0, 3)}, "webp": {"psnr": Tally(2, 0, 1)}}})
    'ours wins against webp on every metric (3 images) and loses everywhere else'
    """
    clauses: dict[tuple[str, str], list[str]] = {}
    for ours, per in results.items():
        clauses.setdefault(_clause(per, metric_names), []).append(ours)
    return "; ".join(
        f"{join_words(variants)} {plural if len(variants) > 1 else single}"
        for (single, plural), variants in clauses.items()
    )
