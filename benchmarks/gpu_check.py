"""GPU check at paper scale: training-step times of the paper's architectures, a short fit through the shared loop
under each training-time defense, and the defense's overhead on a forward pass (Table 5 analogue).

Run on a CUDA machine: ``python benchmarks/gpu_check.py --out gpu.json``. Ratios and times come from this run.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ssdlib import SSD, estimate_q_table  # noqa: E402
from ssdlib.defenses import build_defense  # noqa: E402
from ssdlib.experiments.solver import ssd_overhead  # noqa: E402
from ssdlib.models import build_model, count_parameters  # noqa: E402
from ssdlib.timing import time_call  # noqa: E402
from ssdlib.training import TrainConfig, fit  # noqa: E402


def step_time(model, defense, x, y, repeat: int) -> float:
    """Median seconds of one SGD step (forward, defense loss, backward, update) at this batch."""
    net = defense.wrap(model).to(x.device).train()
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.01, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        loss, _, _ = defense.loss(net, x, y, 0, 1)
        loss.backward()
        opt.step()

    return time_call(step, repeat=repeat, warmup=2, device=x.device)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--fit-images", type=int, default=512)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 1
    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 3, 64, 64, generator=g).to(dev)
    y = torch.randint(0, args.classes, (args.batch,), generator=g).to(dev)
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "batch": args.batch,
              "classes": args.classes, "steps": [], "overhead": []}
    for family in ("ir152", "vgg16"):
        for name in ("none", "mid", "bido", "ls"):
            model = build_model(family, args.classes, "paper")
            t = step_time(model, build_defense(name), x, y, args.repeat)
            report["steps"].append({"family": family, "defense": name, "params_M": count_parameters(model) / 1e6,
                                    "step_ms": 1e3 * t})
            print(f"{family:6s} {name:5s} step {1e3 * t:7.2f} ms")
        model = build_model(family, args.classes, "paper").to(dev).eval()
        with torch.no_grad():
            probs = torch.softmax(model(x), -1)
        ssd = SSD(estimate_q_table(probs, probs.argmax(-1), args.classes, missing="uniform"), T=0.1, eps=0.5,
                  seed=0).to(dev)
        row = {"family": family, **ssd_overhead(model, ssd, x, repeat=args.repeat)}
        print(f"{family:6s} forward {row['forward_ms']:.2f} ms, SSD alone {row['SSD_alone_ms']:.2f} ms "
              f"(+{row['overhead_%']:.1f}%)")
        report["overhead"].append(row)
    # a short real fit through the shared loop on CUDA (random faces-shaped data), with checkpointing
    n = args.fit_images
    images = (torch.rand(n, 3, 64, 64, generator=g) * 255).to(torch.uint8)
    labels = torch.randint(0, 10, (n,), generator=g)
    config = TrainConfig(family="ir152", scale="paper", num_classes=10, epochs=2, batch_size=64, lr=0.01)
    t0 = time.perf_counter()
    _, history = fit(build_model("ir152", 10, "paper"), (images, labels), (images[:128], labels[:128]),
                     config=config, device=dev, progress=False)
    report["fit"] = {"seconds": time.perf_counter() - t0, "history": history}
    print(f"fit: 2 epochs of {n} images in {report['fit']['seconds']:.1f} s; last: {history[-1]}")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
