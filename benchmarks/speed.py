"""Speed and memory scaling of ClusCAM against every baseline and against its cost floor.

Three sweeps on MONAI's ResNet-18 (random weights, ``layer4``: 512 channels), explained for the argmax
class of brain-like phantoms:

* size: 2D 128^2 to 512^2 and 3D 64^3 to 160^3 (K = 10, one image) for every method;
* K: 5 to 100 clusters (2D 256^2 and 3D 64^3), ClusCAM against its floor;
* batch: several images per call (2D 256^2, 3D 64^3), time per image.

The floor is what any ClusCAM must pay: one forward pass of the input plus K forward passes of masked
copies, chunked as ClusCAM chunks them. Timing: the methods of a case run round-robin in one process
after one warm-up call each, so that load from other work on a shared machine falls on all of them
alike; medians of ``--repeats`` calls. Memory: each (case, method) runs once more in a process of its
own (forked from a server that has imported torch and MONAI), whose peak resident memory is that call's.
Score-CAM, occlusion and RISE (hundreds to thousands of forward passes) are timed by that one call,
and skipped where the passes times the measured forward time exceed ``--max-call-seconds``: the table
then gives that estimate, marked as such, not a measurement.

    python benchmarks/speed.py                  # the full study (about 70 minutes on 2 CPU cores)
    python benchmarks/speed.py --sweeps size    # one sweep
    python benchmarks/speed.py --quick          # tiny sizes, a smoke run of every code path

Writes ``speed.json``, ``speed.md`` (the tables docs/speed.md quotes) and ``speed_scaling.png`` into
``--output`` (default ``benchmarks/results``; ``--name`` changes the base name, e.g. ``speed_cuda`` for the GPU check
``benchmarks/device_check.sh``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import multiprocessing
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from monai_cluscam.cam.registry import method_label, method_names, method_spec

HERE = Path(__file__).resolve().parent
LAYER = "layer4"
DEFAULT_K = 10
#: The registry's methods (``monai_cluscam.cam.registry``) under the keys ``speed.json`` has always used:
#: Grad-CAM++ as its alias "gradcam++"; any other method under its canonical name.
_KEYS = {"gradcampp": "gradcam++"}
#: Methods whose forward passes grow with the channels or masks: timed by one call, skipped past a time budget
#: (``forward_passes`` knows their count). Every other registered method is timed with the cheap ones.
EXPENSIVE = ["scorecam", "occlusion", "rise"]
#: ClusCAM's floor and variants (not registry methods) first, then the registry's other cheap methods
CHEAP = ["floor", "cluscam", "cluscam-input", "published-reference",
         *(_KEYS.get(m, m) for m in method_names() if m not in ("cluscam", *EXPENSIVE))]
SWEEP_METHODS = {"size": CHEAP + EXPENSIVE, "k": ["floor", "cluscam"], "batch": ["floor", "cluscam", "gradcam"]}
LABELS = {
    "floor": "floor (K+1 passes)",
    "cluscam-input": "ClusCAM, input-resolution clusters",
    "published-reference": "published algorithm",
    **{m: method_label(m) for m in CHEAP + EXPENSIVE if m not in ("floor", "cluscam-input", "published-reference")},
}
FULL = {
    "sizes": {2: [128, 256, 384, 512], 3: [64, 112, 160]},
    "ks": [5, 10, 20, 50, 100],
    "k_size": {2: 256, 3: 64},
    "batches": {2: [1, 4, 8], 3: [1, 2, 4]},
    "batch_size": {2: 256, 3: 64},
    # input-resolution clustering holds (voxels x channels) floats: 5.8 GB at 96^3 (docs/speed.md, 2026-11-22)
    "input_clusters_max": {2: 512, 3: 64},
    # the published code runs scikit-learn k-means at input resolution, one image at a time
    "reference_max": {2: 256, 3: 0},
}
QUICK = {
    "sizes": {2: [32, 48], 3: [16]},
    "ks": [2, 4],
    "k_size": {2: 32, 3: 16},
    "batches": {2: [1, 2], 3: [1, 2]},
    "batch_size": {2: 32, 3: 16},
    "input_clusters_max": {2: 48, 3: 16},
    "reference_max": {2: 32, 3: 0},
}


def plan_cases(grid: dict, sweeps: list[str], dims: list[int]) -> list[dict]:
    """The cases to measure, each with its methods and the sweeps it belongs to; a case shared by
    several sweeps (e.g. 2D 256^2, K = 10, one image) is measured once."""
    cases: dict[tuple, dict] = {}

    def add(sweep: str, d: int, size: int, k: int, batch: int, methods: list[str]) -> None:
        case = cases.setdefault((d, size, k, batch), {"dims": d, "size": size, "k": k, "batch": batch,
                                                      "sweeps": [], "methods": []})
        case["sweeps"].append(sweep)
        case["methods"] += [m for m in methods if m not in case["methods"]]

    for d in dims:
        if "size" in sweeps:
            for size in grid["sizes"][d]:
                methods = [m for m in CHEAP + EXPENSIVE
                           if (m != "cluscam-input" or size <= grid["input_clusters_max"][d])
                           and (m != "published-reference" or size <= grid["reference_max"][d])]
                add("size", d, size, DEFAULT_K, 1, methods)
        if "k" in sweeps:
            for k in grid["ks"]:
                add("k", d, grid["k_size"][d], k, 1, SWEEP_METHODS["k"])
        if "batch" in sweeps:
            for batch in grid["batches"][d]:
                add("batch", d, grid["batch_size"][d], DEFAULT_K, batch, SWEEP_METHODS["batch"])
    order = {m: i for i, m in enumerate(CHEAP + EXPENSIVE)}
    for case in cases.values():
        case["methods"].sort(key=order.__getitem__)
        case["name"] = case_name(case)
    return list(cases.values())


def case_name(case: dict) -> str:
    return f"{case['dims']}d-{case['size']} K={case['k']} B={case['batch']}"


def make_case(case: dict, device: str) -> tuple[torch.nn.Module, torch.Tensor]:
    """ResNet-18 with fixed random weights and ``batch`` brain-like phantoms (a noisy ball) of the case's size."""
    from monai.networks.nets import resnet18

    torch.manual_seed(0)
    model = resnet18(spatial_dims=case["dims"], n_input_channels=1, num_classes=4).eval().to(device)
    n, dims = case["size"], case["dims"]
    axes = torch.meshgrid(*[torch.linspace(-1, 1, n)] * dims, indexing="ij")
    ball = (sum(a**2 for a in axes).sqrt() < 0.8).float()
    g = torch.Generator().manual_seed(0)
    x = torch.stack([ball * (0.6 + 0.4 * torch.rand([n] * dims, generator=g)) for _ in range(case["batch"])])
    return model, x[:, None].to(device)


def make_runner(method: str, model: torch.nn.Module, x: torch.Tensor, k: int):
    """A no-argument callable that explains ``x`` once with ``method``."""
    from monai_cluscam import ClusCAM
    from monai_cluscam.cam.base import auto_batch_size, forward_logits

    if method == "floor":
        chunk = auto_batch_size(x)

        def floor() -> None:  # the K copies of each image made one chunk at a time, as masked_forward makes them
            with torch.inference_mode():
                forward_logits(model, x)
                pairs = torch.arange(len(x) * k, device=x.device)
                for start in range(0, len(pairs), chunk):
                    forward_logits(model, x[pairs[start : start + chunk] // k])

        return floor
    if method in ("cluscam", "cluscam-input"):
        resolution = "feature" if method == "cluscam" else "input"
        return lambda: ClusCAM(model, LAYER, num_clusters=k, cluster_resolution=resolution, centroids="mean")(x)
    if method == "published-reference":
        sys.path.insert(0, str(HERE.parent / "tests"))
        from reference_cluscam import reference_cluscam

        # the published code also back-propagates the base score before clustering
        layer = dict(model.named_modules())[LAYER]
        return lambda: [reference_cluscam(model, layer, x[i : i + 1], k=k, backward=True) for i in range(len(x))]
    try:
        cls = method_spec(method).cls  # every other method from the registry, at its defaults
    except ValueError:
        raise ValueError(f"unknown method {method!r}") from None
    cam = cls(model, LAYER)
    return lambda: cam(x)


def forward_passes(method: str, case: dict, channels: int) -> int:
    """Forward passes one call of an expensive method makes on one image (for the skip estimate)."""
    if method == "scorecam":
        return channels + 1
    if method == "rise":
        return 1000 + 1
    if method == "occlusion":  # MONAI's sliding boxes: 16 voxels, overlap 0.5 (stride 8), per axis
        per_axis = 1 + max(0, math.ceil((case["size"] - 16) / 8))
        return per_axis ** case["dims"] + 1
    raise ValueError(method)


def _quiet() -> None:
    """Random weights on small inputs can give constant maps; that costs the same time, so say nothing."""
    import warnings

    warnings.filterwarnings("ignore", message=".*is constant")


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _rss_mb() -> dict[str, float]:
    """Current and peak resident memory of this process, MB (Linux /proc; peak from getrusage elsewhere)."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
        return {"rss": int(fields["VmRSS"].split()[0]) / 1024, "peak": int(fields["VmHWM"].split()[0]) / 1024}
    except (OSError, KeyError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform != "darwin" else 2**20)
        return {"rss": peak, "peak": peak}


def time_case(case: dict, methods: list[str], repeats: int | None, threads: int, device: str) -> dict:
    """Round-robin timing of ``methods`` on one case after a warm-up call each; also the time of one
    plain forward pass of the batch and the explained layer's channel count. ``repeats=None``: 5 timed
    calls where the floor takes under 2 s, 3 under 20 s, else 2."""
    _quiet()
    torch.set_num_threads(threads)
    model, x = make_case(case, device)
    runners = {m: make_runner(m, model, x, case["k"]) for m in methods}
    store = {}
    handle = dict(model.named_modules())[LAYER].register_forward_hook(lambda m, a, o: store.update(shape=o.shape))
    forward = []
    with torch.inference_mode():
        for _ in range(4):
            _sync(device)
            start = time.perf_counter()
            model(x)
            _sync(device)
            forward.append(time.perf_counter() - start)
    handle.remove()
    if repeats is None:
        floor_s = statistics.median(forward[1:]) * (case["k"] + 1)
        repeats = 5 if floor_s < 2 else 3 if floor_s < 20 else 2
    for run in runners.values():
        run()
    times: dict[str, list[float]] = {m: [] for m in methods}
    for r in range(repeats):
        for method in methods[r % len(methods) :] + methods[: r % len(methods)]:
            _sync(device)
            start = time.perf_counter()
            runners[method]()
            _sync(device)
            times[method].append(time.perf_counter() - start)
    return {"times": times, "repeats": repeats, "forward_s": statistics.median(forward[1:]),
            "channels": int(store["shape"][1])}


def one_call(case: dict, method: str, threads: int, device: str) -> dict:
    """One call in a fresh process: its time and the memory before and at its peak: the process's resident
    memory on the CPU, the GPU memory torch allocated on a GPU (model and input included in both)."""
    _quiet()
    torch.set_num_threads(threads)
    model, x = make_case(case, device)
    run = make_runner(method, model, x, case["k"])
    gpu = device.startswith("cuda")
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    setup = torch.cuda.memory_allocated() / 2**20 if gpu else _rss_mb()["rss"]
    _sync(device)
    start = time.perf_counter()
    run()
    _sync(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**20 if gpu else _rss_mb()["peak"]
    return {"seconds": seconds, "setup_mb": setup, "peak_mb": peak}


def _in_child(context, fn, *args):
    """Run ``fn(*args)`` in a new process forked from the server, so that its peak memory is its own.

    Raises:
        RuntimeError: ``fn`` raised (its message), or the process died without an answer (e.g. killed for
            memory).
    """
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_child_main, args=(send, fn, args), daemon=True)
    process.start()
    send.close()
    try:
        status, value = receive.recv()
    except EOFError:
        process.join()
        raise RuntimeError(f"the measuring process died without an answer (exit code {process.exitcode})") from None
    finally:
        receive.close()
    process.join()
    if status == "error":
        raise RuntimeError(value)
    return value


def _child_main(send, fn, args) -> None:
    try:
        send.send(("ok", fn(*args)))
    except Exception as err:  # reported to the parent, which records the row as failed
        send.send(("error", f"{type(err).__name__}: {err}"))
    finally:
        send.close()


def measure(cases: list[dict], repeats: int | None, threads: int, device: str, max_call_s: float,
            checkpoint: Path) -> list[dict]:
    """Every (case, method) of the plan; the rows so far are rewritten to ``checkpoint`` after each case,
    so that an interrupted study keeps what it measured."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "monai", "monai_cluscam"])
    rows = []
    total = sum(len(c["methods"]) for c in cases)
    done = 0
    for case in cases:
        cheap = [m for m in case["methods"] if m in CHEAP]
        try:
            timing = _in_child(context, time_case, case, cheap, repeats, threads, device)
            floor = statistics.median(timing["times"]["floor"])
        except RuntimeError as err:
            timing = {"failed": str(err)}
        for method in case["methods"]:
            done += 1
            row = {"case": case["name"], **{k: case[k] for k in ("dims", "size", "k", "batch", "sweeps")},
                   "method": method}
            if "failed" in timing:
                row["failed"] = timing["failed"]
            elif method in EXPENSIVE:
                row["forward_s"] = timing["forward_s"]
                passes = forward_passes(method, case, timing["channels"]) * case["batch"]
                row["estimate_s"] = passes * timing["forward_s"] / case["batch"]
                if row["estimate_s"] > max_call_s:
                    row["skipped"] = f"estimated {row['estimate_s']:.0f} s > --max-call-seconds {max_call_s:g}"
            if "failed" not in row and "skipped" not in row:
                try:
                    call = _in_child(context, one_call, case, method, threads, device)
                except RuntimeError as err:
                    row["failed"] = str(err)
                else:
                    row["times_s"] = [call["seconds"]] if method in EXPENSIVE else timing["times"][method]
                    row.update(median_s=statistics.median(row["times_s"]), setup_mb=call["setup_mb"],
                               peak_mb=call["peak_mb"], forward_s=timing["forward_s"])
                    row["per_image_s"] = row["median_s"] / case["batch"]
                    row["x_floor"] = row["median_s"] / floor
            rows.append(row)
            if "median_s" in row:
                status = (f"{row['per_image_s']:9.3f} s/image {row['x_floor']:7.2f} x floor  "
                          f"peak {row['peak_mb']:6.0f} MB")
            else:
                status = f"skipped ({row['skipped']})" if "skipped" in row else f"FAILED: {row['failed']}"
            print(f"[{done}/{total}] {case['name']:22s} {method:20s} {status}", flush=True)
        checkpoint.write_text(json.dumps(rows, indent=1) + "\n")
    return rows


def summary(rows: list[dict]) -> dict:
    """The targets: ClusCAM within 1.15x of its floor, and its speed-up over Score-CAM, per dimension."""
    out = {}
    for d in (2, 3):
        mine = [r for r in rows if r["dims"] == d and r["method"] == "cluscam" and "median_s" in r]
        if not mine:
            continue
        ratios = [r["x_floor"] for r in mine]
        scorecam = {r["case"]: r for r in rows if r["dims"] == d and r["method"] == "scorecam"}
        speedups = {r["case"]: scorecam[r["case"]]["median_s"] / r["median_s"]
                    for r in mine if r["case"] in scorecam and "median_s" in scorecam[r["case"]]}
        out[f"{d}d"] = {"cluscam_x_floor_max": max(ratios), "cluscam_x_floor_median": statistics.median(ratios),
                        "within_1_15_of_floor": max(ratios) <= 1.15, "scorecam_speedup": speedups}
    return out


def markdown(rows: list[dict], meta: dict, summ: dict) -> str:
    lines = [
        f"Measured {meta['date']} on {meta['machine']}, torch {meta['torch']}, device {meta['device']}, "
        f"{meta['threads']} threads. MONAI ResNet-18, `{LAYER}` (512 channels), random weights, brain-like "
        "phantoms; each method at its package defaults (ClusCAM r = 0.5, tau = 0.5, feature-resolution clusters; "
        "RISE 1000 masks; occlusion boxes of 16 voxels, overlap 0.5). Seconds per image: median of repeated calls "
        "(Score-CAM, occlusion and RISE: one call); x floor: against one forward pass plus K masked passes "
        "chunked as ClusCAM chunks them; peak MB: "
        + ("GPU memory torch allocated" if meta["device"].startswith("cuda") else "resident memory of a fresh process")
        + f" at the peak of one call (about {statistics.median(r['setup_mb'] for r in rows if 'setup_mb' in r):.0f}"
        " MB of it held before the call: "
        + ("model and input" if meta["device"].startswith("cuda") else "torch, MONAI, model and input")
        + "). *est.*: not run; forward passes times the measured time of one forward pass.",
        "",
    ]
    for d in (2, 3):
        s = summ.get(f"{d}d")
        if s:
            speed = ", ".join(f"{c.split(' ')[0]}: {v:.0f}x" for c, v in s["scorecam_speedup"].items())
            lines.append(f"- **{d}D**: ClusCAM / floor at most {s['cluscam_x_floor_max']:.2f} (median "
                         f"{s['cluscam_x_floor_median']:.2f}) over the {d}D cases; "
                         + (f"faster than Score-CAM by {speed}." if speed else "Score-CAM not run."))
    lines.append("")

    def cell(r: dict | None, key: str) -> str:
        if r is None:
            return ""
        if "failed" in r:
            return "failed"
        if "skipped" in r:
            return f"*est. {r['estimate_s']:.0f} s*" if key == "per_image_s" else "-"
        if key == "per_image_s":
            return f"{r['per_image_s']:.3f} ({r['x_floor']:.2f}x)"
        return f"{r['peak_mb']:.0f} (+{r['peak_mb'] - r['setup_mb']:.0f})"

    by = {(r["case"], r["method"]): r for r in rows}
    sweeps = [("size", "Size (K = 10, one image): seconds per image (x floor)", "per_image_s"),
              ("size", "Size (K = 10, one image): peak resident MB (+ above set-up)", "peak_mb"),
              ("k", "Number of clusters K (one image): seconds per image (x floor)", "per_image_s"),
              ("batch", "Batch size (K = 10): seconds per image (x floor) and peak MB of the call", "batch")]
    for sweep, title, key in sweeps:
        order = {r["case"]: (r["dims"], r["size"], r["k"], r["batch"]) for r in rows}
        cases = sorted({r["case"] for r in rows if sweep in r["sweeps"]}, key=order.__getitem__)
        if not cases:
            continue
        methods = [m for m in SWEEP_METHODS[sweep] if any((c, m) in by for c in cases)]
        lines += [f"**{title}**", ""]
        if key == "batch":
            cols = [f"{LABELS[m]} s" for m in methods] + [f"{LABELS[m]} MB" for m in methods]
            lines += ["| case | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
            for c in cases:
                cells = [cell(by.get((c, m)), "per_image_s") for m in methods] + [cell(by.get((c, m)), "peak_mb")
                                                                               for m in methods]
                lines.append(f"| {c} | " + " | ".join(cells) + " |")
        else:
            lines += ["| case | " + " | ".join(LABELS[m] for m in methods) + " |", "|---|" + "---:|" * len(methods)]
            for c in cases:
                lines.append(f"| {c} | " + " | ".join(cell(by.get((c, m)), key) for m in methods) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = CHEAP + EXPENSIVE
    color = dict(zip(methods, plt.cm.tab10.colors, strict=True))
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))

    def curve(ax, d: int, sweep: str, x: str, y, method: str, label: str, colour=None) -> None:
        pts = sorted((r[x], y(r)) for r in rows if r["dims"] == d and r["method"] == method and sweep in r["sweeps"]
                     and "median_s" in r)
        est = sorted((r[x], r["estimate_s"]) for r in rows if r["dims"] == d and r["method"] == method
                     and sweep in r["sweeps"] and "skipped" in r and y is _per_image)
        style = dict(color=colour or color[method], ms=4)
        if pts:
            ax.plot(*zip(*pts, strict=True), "--" if method == "floor" else "-o", label=label, **style)
        if est:
            ax.plot(*zip(*est, strict=True), "x", ms=6, color=style["color"])

    def axis(ax, ticks: list[int], legend: bool, **kwargs) -> None:
        ax.set(xscale="log", yscale="log", **kwargs)
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        if legend:
            ax.legend(fontsize=7)

    for col, d in enumerate((2, 3)):
        sizes = sorted({r["size"] for r in rows if r["dims"] == d and "size" in r["sweeps"]})
        for m in methods:
            curve(axes[0, col], d, "size", "size", _per_image, m, LABELS[m])
            curve(axes[1, col], d, "size", "size", lambda r: max(r["peak_mb"] - r["setup_mb"], 1.0), m, LABELS[m])
        if sizes:
            axis(axes[0, col], sizes, False, xlabel=f"{d}D edge length (voxels)", ylabel="seconds per image",
                 title=f"{d}D: time against size (K = 10; x: estimate)")
            axis(axes[1, col], sizes, False, xlabel=f"{d}D edge length (voxels)", ylabel="MB above set-up",
                 title=f"{d}D: peak memory of one call above set-up")
    handles = [plt.Line2D([], [], color=color[m], ls="--" if m == "floor" else "-", marker=None if m == "floor"
                          else "o", ms=4, label=LABELS[m]) for m in methods]
    fig.legend(handles=handles, loc="lower center", ncol=5, fontsize=8, bbox_to_anchor=(0.36, 0))
    # 2D and 3D apart by colour in the right-hand panels
    palette = {(2, "floor"): "tab:blue", (2, "cluscam"): "tab:orange", (2, "gradcam"): "tab:purple",
               (3, "floor"): "tab:green", (3, "cluscam"): "tab:red", (3, "gradcam"): "tab:brown"}
    for row, (sweep, x, title) in enumerate((("k", "k", "time against K (one image)"),
                                             ("batch", "batch", "time per image against images per call"))):
        ax = axes[row, 2]
        for d in (2, 3):
            for m in SWEEP_METHODS[sweep]:
                curve(ax, d, sweep, x, _per_image, m, f"{d}D {LABELS[m]}", palette[d, m])
        ticks = sorted({r[x] for r in rows if sweep in r["sweeps"]})
        if ticks:
            axis(ax, ticks, True, xlabel="K (clusters)" if sweep == "k" else "images per call",
                 ylabel="seconds per image", title=title)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _per_image(row: dict) -> float:
    return row["per_image_s"]


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweeps", default="size,k,batch", help="comma-separated: size, k, batch")
    parser.add_argument("--dims", default="2,3", help="comma-separated: 2, 3")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of every code path")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed calls per method (default: 5, 3 or 2 as the floor takes under 2 s, 20 s or more)")
    parser.add_argument("--threads", type=int, default=min(os.cpu_count() or 1, 16))
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:n]")
    parser.add_argument("--max-call-seconds", type=float, default=300.0,
                        help="skip a Score-CAM/occlusion/RISE call estimated to take longer (default 300)")
    parser.add_argument("--output", type=Path, default=HERE / "results")
    parser.add_argument("--name", default="speed",
                        help="base name of the result files (default %(default)s: speed.json, speed.md, ...)")
    args = parser.parse_args(argv)
    sweeps = [s.strip() for s in args.sweeps.split(",") if s.strip()]
    dims = [int(d) for d in args.dims.split(",") if d.strip()]
    if not sweeps or set(sweeps) - {"size", "k", "batch"}:
        parser.error(f"--sweeps takes size, k and/or batch; got {args.sweeps!r}")
    if not dims or set(dims) - {2, 3}:
        parser.error(f"--dims takes 2 and/or 3; got {args.dims!r}")
    for name in ("repeats", "threads", "max_call_seconds"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive; got {value}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: torch sees no CUDA device here; use --device cpu")

    cases = plan_cases(QUICK if args.quick else FULL, sweeps, dims)
    args.output.mkdir(parents=True, exist_ok=True)
    partial = args.output / f"{args.name}.partial.json"
    rows = measure(cases, args.repeats or (2 if args.quick else None), args.threads, args.device,
                   args.max_call_seconds, partial)
    partial.unlink()
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "torch": torch.__version__,
        "device": args.device,
        "threads": args.threads,
        "layer": LAYER,
        "quick": args.quick,
    }
    summ = summary(rows)
    (args.output / f"{args.name}.json").write_text(json.dumps({"meta": meta, "summary": summ, "rows": rows}, indent=1)
                                                   + "\n")
    (args.output / f"{args.name}.md").write_text(markdown(rows, meta, summ))
    plot(rows, args.output / f"{args.name}_scaling.png")
    print(f"wrote {args.output / args.name}.md, .json and _scaling.png")
    return args.output


if __name__ == "__main__":
    main()
