"""Speed and peak memory of ClusCAM against its baselines and its cost floor, per image.

Times: all methods of a case run in one process, round-robin, after one warm-up call each, so that
load from other work on a shared machine falls on all of them alike; medians over ``--repeats`` calls.
Memory: each (case, method) runs once more in a fresh process, so that its peak resident memory is its
own. The floor is what any ClusCAM must pay: one forward pass of the input plus K forward passes of
masked copies, chunked as ClusCAM chunks them.

    python benchmarks/speed.py                    # 2D 128^2 ResNet-18 and 3D 96^3 ResNet-18
    python benchmarks/speed.py --cases 3d-128     # the 3D 128^3 memory check
    python benchmarks/speed.py --scorecam-3d      # also Score-CAM in 3D (512 forward passes: slow)

Writes ``benchmarks/results/speed.json`` and ``speed.md`` (the table the README quotes).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
K = 10

CASES = {
    "2d-128": {"dims": 2, "size": 128, "layer": "layer4"},
    "3d-96": {"dims": 3, "size": 96, "layer": "layer4"},
    "3d-128": {"dims": 3, "size": 128, "layer": "layer4"},
}
METHODS_BY_CASE = {
    "2d-128": ["floor", "cluscam-feature", "cluscam-input", "published-reference", "scorecam", "gradcam"],
    "3d-96": ["floor", "cluscam-feature", "cluscam-input", "gradcam"],
    "3d-128": ["floor", "cluscam-feature"],
}


def make_case(name: str) -> tuple[torch.nn.Module, torch.Tensor, str]:
    from monai.networks.nets import resnet18

    spec = CASES[name]
    torch.manual_seed(0)
    model = resnet18(spatial_dims=spec["dims"], n_input_channels=1, num_classes=4).eval()
    n, dims = spec["size"], spec["dims"]
    axes = torch.meshgrid(*[torch.linspace(-1, 1, n)] * dims, indexing="ij")
    radius = sum(a**2 for a in axes).sqrt()
    g = torch.Generator().manual_seed(0)
    x = ((radius < 0.8).float() * (0.6 + 0.4 * torch.rand([n] * dims, generator=g)))[None, None]
    return model, x, spec["layer"]


def make_runner(method: str, model: torch.nn.Module, x: torch.Tensor, layer: str):
    from monai_cluscam import ClusCAM, GradCAM, ScoreCAM
    from monai_cluscam.cam.base import auto_batch_size, forward_logits

    if method == "floor":
        chunk = auto_batch_size(x)

        def floor() -> None:
            with torch.inference_mode():
                forward_logits(model, x)
                copies = x.expand(K, *x.shape[1:])
                for start in range(0, K, chunk):
                    forward_logits(model, copies[start : start + chunk])

        return floor
    if method == "cluscam-feature":
        return lambda: ClusCAM(model, layer, num_clusters=K, cluster_resolution="feature")(x)
    if method == "cluscam-input":
        return lambda: ClusCAM(model, layer, num_clusters=K, cluster_resolution="input")(x)
    if method == "scorecam":
        return lambda: ScoreCAM(model, layer)(x)
    if method == "gradcam":
        return lambda: GradCAM(model, layer)(x)
    if method == "published-reference":
        sys.path.insert(0, str(HERE.parent / "tests"))
        from reference_cluscam import reference_cluscam

        # the published code also back-propagates the base score before clustering
        return lambda: reference_cluscam(model, dict(model.named_modules())[layer], x, k=K, backward=True)
    raise ValueError(f"unknown method {method!r}")


def time_case(case: str, methods: list[str], repeats: dict[str, int], threads: int) -> dict[str, list[float]]:
    """Time every method of a case in one process, round-robin, so that load from other work on a shared
    machine falls on all methods alike; each method is warmed up once first."""
    torch.set_num_threads(threads)
    model, x, layer = make_case(case)
    runners = {m: make_runner(m, model, x, layer) for m in methods}
    for run in runners.values():
        run()
    times: dict[str, list[float]] = {m: [] for m in methods}
    for r in range(max(repeats.values())):
        order = methods[r % len(methods) :] + methods[: r % len(methods)]
        for method in order:
            if len(times[method]) < repeats[method]:
                start = time.perf_counter()
                runners[method]()
                times[method].append(time.perf_counter() - start)
    return times


def peak_memory(case: str, method: str, threads: int) -> dict[str, float]:
    """Resident memory before and at the peak of one call, in a process of its own."""
    torch.set_num_threads(threads)
    model, x, layer = make_case(case)
    run = make_runner(method, model, x, layer)
    setup = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    run()
    return {"rss_setup_mb": setup, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _child(args: list[str]) -> dict:
    cmd = [sys.executable, __file__, *args]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="2d-128,3d-96", help="comma-separated: " + ", ".join(CASES))
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per method (default 7 in 2D, 3 in 3D)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--scorecam-3d", action="store_true", help="also time Score-CAM in 3D (slow)")
    parser.add_argument("--time-child", help=argparse.SUPPRESS)
    parser.add_argument("--memory-child", nargs=2, metavar=("CASE", "METHOD"), help=argparse.SUPPRESS)
    parser.add_argument("--plan", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.time_child:
        plan = json.loads(args.plan)
        print(json.dumps(time_case(args.time_child, plan["methods"], plan["repeats"], args.threads)))
        return
    if args.memory_child:
        print(json.dumps(peak_memory(*args.memory_child, args.threads)))
        return

    rows = []
    for case in args.cases.split(","):
        if case not in CASES:
            parser.error(f"unknown case {case!r}; choose from {', '.join(CASES)}")
        methods = list(METHODS_BY_CASE[case])
        if args.scorecam_3d and case.startswith("3d") and "scorecam" not in methods:
            methods.append("scorecam")
        n = args.repeats or (7 if case.startswith("2d") else 3)
        # Score-CAM runs C + 1 forward passes: fewer repeats (one in 3D, where it takes many minutes)
        repeats = {m: (1 if case.startswith("3d") else min(n, 3)) if m == "scorecam" else n for m in methods}
        plan = json.dumps({"methods": methods, "repeats": repeats})
        times = _child(["--time-child", case, "--plan", plan, "--threads", str(args.threads)])
        for method in methods:
            memory = _child(["--memory-child", case, method, "--threads", str(args.threads)])
            row = {"case": case, "method": method, "median_s": statistics.median(times[method]),
                   "times_s": times[method], **memory}
            rows.append(row)
            print(f"{case:8s} {method:22s} median {row['median_s']:8.3f} s   peak RSS {row['peak_rss_mb']:7.0f} MB",
                  flush=True)

    RESULTS.mkdir(exist_ok=True)
    meta = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {_cores()} cores, {platform.platform()}",
        "torch": torch.__version__,
        "threads": args.threads,
        "num_clusters": K,
    }
    existing = json.loads((RESULTS / "speed.json").read_text())["rows"] if (RESULTS / "speed.json").exists() else []
    keep = [r for r in existing if r["case"] not in {row["case"] for row in rows}]
    all_rows = keep + rows
    (RESULTS / "speed.json").write_text(json.dumps({"meta": meta, "rows": all_rows}, indent=2) + "\n")
    (RESULTS / "speed.md").write_text(markdown(all_rows, meta))
    print(markdown(all_rows, meta))


def _cores() -> int:
    import os

    return os.cpu_count() or 1


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        f"Measured {meta['date']} on {meta['machine']}, torch {meta['torch']}, {meta['threads']} threads, K = "
        f"{meta['num_clusters']}. Median seconds per image (methods of a case timed round-robin in one process); "
        "ratios to the (K+1)-forward floor of the same case; peak resident memory of a process running one call "
        "(model, input and Python included).",
        "",
        "| case | method | median s | x floor | peak RSS MB |",
        "|---|---|---:|---:|---:|",
    ]
    floors = {r["case"]: r["median_s"] for r in rows if r["method"] == "floor"}
    for r in rows:
        ratio = r["median_s"] / floors[r["case"]] if r["case"] in floors else float("nan")
        lines.append(f"| {r['case']} | {r['method']} | {r['median_s']:.3f} | {ratio:.2f} | {r['peak_rss_mb']:.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
