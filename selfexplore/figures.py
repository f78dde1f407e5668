"""The report's pictures, one function per PNG, each from plain data (`report.py` reads the run).

Drawn with matplotlib's object API (`Figure`, rendered by Agg) rather than `pyplot`: no global state, no display.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

OUTCOME_COLOR, STEP_COLOR = "tab:orange", "tab:green"


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    return path


def accuracy(models: list[tuple[str, dict]], path: Path) -> Path:
    """Greedy test accuracy per model with its 95% interval; `models` are (title, eval summary) in pipeline order."""
    fig = Figure(figsize=(8, 1.2 + 0.7 * len(models)), layout="constrained")
    ax = fig.subplots()
    accuracies = [100 * summary["accuracy"] for _, summary in models]
    lows = [a - 100 * summary["ci95"][0] for a, (_, summary) in zip(accuracies, models)]
    highs = [100 * summary["ci95"][1] - a for a, (_, summary) in zip(accuracies, models)]
    rows = range(len(models))
    ax.barh(rows, accuracies, xerr=[lows, highs], capsize=5, color="tab:blue", alpha=0.8, error_kw={"elinewidth": 1.2})
    for row, a, high, (_, summary) in zip(rows, accuracies, highs, models):
        ax.text(a + high + 1, row, f"{a:.1f}% ({summary['correct']}/{summary['n']})", va="center", fontsize=9)
    ax.set_yticks(list(rows), [title for title, _ in models])
    ax.invert_yaxis()  # pipeline order, top to bottom
    ax.set_xlim(0, min(100, max(a + h for a, h in zip(accuracies, highs)) + 15))
    ax.set_xlabel("greedy accuracy on the test set (%)")
    n = models[0][1]["n"]
    ax.set_title(f"Test accuracy per model: {n} problems, error bars = 95% Wilson interval")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def first_pits(histogram: dict[int, int], rejected: int, strategy: str, k: int, path: Path) -> Path:
    """How many rejected solutions have their first pit at each step."""
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    steps = sorted(histogram)
    ax.bar(steps, [histogram[j] for j in steps], color="tab:red", alpha=0.8)
    for j in steps:
        ax.text(j, histogram[j], str(histogram[j]), ha="center", va="bottom", fontsize=9)
    ax.set_xticks(range(1, max(steps) + 1))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step of the first pit (1 = the first step is already wrong)")
    ax.set_ylabel("rejected solutions")
    ax.set_title(f"Where rejected solutions go wrong: first pits of {sum(histogram.values())} of {rejected} explored\n"
                 f"({strategy} search, k = {k} completions per probed step)", fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def step_values(values: list[dict], path: Path) -> Path:
    """The Monte-Carlo value (correct completions / k) of each probed step prefix, by its step; `values` are the
    rows of `step_values.jsonl`."""
    fig = Figure(figsize=(7.5, 4.5), layout="constrained")
    ax = fig.subplots()
    points = Counter((v["step"], v["n_correct"] / v["k"]) for v in values)
    largest = max(points.values())
    ax.scatter(
        [step for step, _ in points], [value for _, value in points], s=[20 + 500 * c / largest for c in points.values()],
        color="tab:purple", alpha=0.35, label="probes (area: how many)",
    )
    steps = sorted({v["step"] for v in values})
    by_step = {j: [v["n_correct"] / v["k"] for v in values if v["step"] == j] for j in steps}
    ax.plot(steps, [sum(by_step[j]) / len(by_step[j]) for j in steps], "o-", color="black", label="mean value")
    ax.set_xticks(steps, [f"{j}\n({len(by_step[j])})" for j in steps])
    ax.set_xlabel("probed prefix: steps 1..j of a rejected solution (number of probes)")
    ax.set_ylabel("value = correct completions / k")
    ax.set_ylim(-0.08, 1.08)
    ax.set_title("Monte-Carlo value of step prefixes of rejected solutions")
    ax.legend(loc="upper right", fontsize=9)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def dpo_curves(curves: dict[str, list[dict]], beta: float, path: Path) -> Path:
    """DPO loss, reward margin and reward accuracy per logged step; `curves` maps a label to metrics.jsonl rows."""
    fig = Figure(figsize=(13, 4), layout="constrained")
    panels = [
        ("loss", "Loss", "sigmoid DPO loss", 1),
        ("rewards/margins", "Reward margin", "reward(chosen) − reward(rejected)", 1),
        ("rewards/accuracies", "Reward accuracy", "pairs with reward(chosen) > reward(rejected) (%)", 100),
    ]
    styles = [(OUTCOME_COLOR, "o-"), (STEP_COLOR, "s--")]  # distinct markers: equal curves stay visible
    last_step = max(row["step"] for rows in curves.values() for row in rows)
    for ax, (key, title, ylabel, scale) in zip(fig.subplots(1, 3), panels):
        for (label, rows), (color, style) in zip(curves.items(), styles):
            logged = [row for row in rows if key in row]
            ax.plot([row["step"] for row in logged], [scale * row[key] for row in logged], style, color=color, label=label, markersize=5, alpha=0.8)
        ax.set_title(title)
        ax.set_xlim(0, last_step + max(1, last_step // 20))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("training step")
        ax.set_ylabel(ylabel, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9)
    ax.set_ylim(-3, 103)
    fig.suptitle(f"DPO from the RFT model, β = {beta}; reward = β · log(π / π_ref) of a response")
    return _save(fig, path)


def pass_at_k(values: list[float], problems: int, temperature: float, path: Path) -> Path:
    """pass@k for k = 1..n (values[k - 1])."""
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    ks = list(range(1, len(values) + 1))
    ax.plot(ks, [100 * v for v in values], "o-", color="tab:blue")
    for k, v in zip(ks, values):
        ax.annotate(f"{100 * v:.1f}%", (k, 100 * v), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=9)
    ax.set_xticks(ks)
    ax.set_ylim(0, min(100, 100 * max(values) + 12))
    ax.set_xlabel("k (samples per problem)")
    ax.set_ylabel("pass@k (%)")
    ax.set_title(f"Sampling from the SFT model: pass@k on {problems} training problems (T = {temperature})")
    ax.grid(alpha=0.3)
    return _save(fig, path)
