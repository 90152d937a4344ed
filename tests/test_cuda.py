"""On a CUDA GPU: maps come back on the caller's device with their metadata, a batch equals its single calls, the
GPU's maps match the CPU's, mixed precision works, and the command line shares a GPU between torchrun processes.
Every test skips without a GPU; ``benchmarks/device_check.sh`` runs them on a machine that has one."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from cli_helpers import assert_same_results, explain_args, make_bundle, read_csv, slices
from monai.data import MetaTensor
from monai.networks.nets import resnet18

from monai_cluscam.cam.registry import method_spec
from monai_cluscam.cli import main

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/device_check.sh)"),
]

METHODS = ["cluscam", "gradcam", "gradcampp", "scorecam", "decomcam", "rise", "occlusion"]


def _net(dims: int = 2) -> torch.nn.Module:
    torch.manual_seed(0)
    return resnet18(spatial_dims=dims, n_input_channels=1, num_classes=3).eval()


def _images(n: int, size: int = 64, dims: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, *[size] * dims, generator=g)


def _correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double().cpu(), b.flatten().double().cpu()
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


@pytest.mark.parametrize("method", METHODS)
def test_maps_come_back_on_the_gpu_with_their_metadata(method):
    net = _net().cuda()
    x = MetaTensor(_images(2).cuda(), meta={"filename_or_obj": "a.png"})
    layers = None if method in ("rise", "occlusion") else "layer4"
    cam = method_spec(method).cls(net, layers) if layers else method_spec(method).cls(net)
    maps = cam(x)
    assert maps.device.type == "cuda" and tuple(maps.shape) == (2, 1, 64, 64)
    assert isinstance(maps, MetaTensor) and maps.meta["filename_or_obj"] == "a.png"
    assert bool(torch.isfinite(maps).all())


@pytest.mark.parametrize("dims", [2, 3])
def test_a_batch_equals_its_single_calls_on_the_gpu(dims):
    net = _net(dims).cuda()
    x = _images(4, 32, dims).cuda()
    cam = method_spec("cluscam").cls(net, ["layer3", "layer4"], num_clusters=4)
    batch = cam(x)
    singles = torch.cat([cam(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(batch, singles, atol=1e-4, rtol=1e-4)


def test_the_gpu_gives_the_cpu_s_maps():
    net, x = _net(), _images(3)
    cpu = method_spec("cluscam").cls(net, "layer4", num_clusters=6)(x)
    gpu = method_spec("cluscam").cls(net.cuda(), "layer4", num_clusters=6)(x.cuda())
    assert _correlation(cpu, gpu) > 0.99


def test_mixed_precision():
    """float16 autocast runs, explains the same classes and keeps the map close (on a random-weight network the
    logit differences are small, so half precision moves the weights a little; bfloat16 on the CPU gave r = 0.74)."""
    net, x = _net().cuda(), _images(2).cuda()
    cam = method_spec("cluscam").cls(net, "layer4", num_clusters=6)
    full = cam(x)
    classes = cam.logits_.argmax(1)
    with torch.autocast("cuda", dtype=torch.float16):
        half = cam(x)
    r = _correlation(full, half)
    print(f"float16 autocast against float32: r = {r:.4f}")
    assert half.dtype == torch.float32 and bool(torch.isfinite(half).all())
    assert torch.equal(cam.logits_.argmax(1), classes) and r > 0.7


def test_torchrun_shares_one_gpu_and_gives_what_one_process_gives(tmp_path):
    bundle = make_bundle(tmp_path / "bundle")
    data = slices(tmp_path / "in", 4)
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(explain_args(bundle, [data], one, "--device", "cuda")) == 0
    args = [a for a in explain_args(bundle, [data], two, "--device", "cuda") if a != "--quiet"]
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    launch += ["-m", "monai_cluscam"]
    run = subprocess.run([*launch, *args], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    assert "explaining (rank 0)" in run.stderr and "explaining (rank 1)" in run.stderr
    assert len(read_csv(two / "predictions.csv")) == 4
    assert_same_results(two, one)
