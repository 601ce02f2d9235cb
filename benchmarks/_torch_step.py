"""The torch.optim side of benchmarks/optimizer_step.py, run in an interpreter that has torch.

It reads one JSON request per line on stdin and answers one JSON line on stdout:
  {"cmd": "setup", "id": k, "shapes": [...], "seed": s, "optimizer": name, "variant": v}
      -> {"ok": true, "first_s": seconds of the first step, "state_bytes": n}
         or {"ok": false, "why": ...}
  {"cmd": "run", "id": k, "reps": n}  -> {"ok": true, "seconds": wall time of n steps}
  {"cmd": "free", "id": k}            -> {"ok": true}
  {"cmd": "bandwidth", "n": elements, "trials": t} -> {"ok": true, "seconds": [...]}
  {"cmd": "versions", "threads": n}   -> {"ok": true, "torch": version, "threads": n} (n: 0 keeps
                                          torch's default thread count)
The parent alternates its requests with its own JAX timings, so both sides are measured under
the same load, one at a time.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch

# The same hyperparameters as the JAX side (see optimizer_step.HYPERS).
VARIANTS = {"for-loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def make_arrays(shapes, seed):
    """Parameters and gradients, the same numbers as optimizer_step.make_arrays."""
    rng = np.random.default_rng(seed)
    params = [(0.02 * rng.standard_normal(s)).astype(np.float32) for s in shapes]
    grads = [(1e-3 * rng.standard_normal(s)).astype(np.float32) for s in shapes]
    return params, grads


def make_optimizer(name, params, variant):
    flags = VARIANTS[variant]
    if name == "sgd":
        return torch.optim.SGD(params, lr=1e-3, momentum=0.9, **flags)
    if name == "adam":
        return torch.optim.Adam(params, lr=1e-3, **flags)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-4, **flags)
    if name == "nadam":
        return torch.optim.NAdam(params, lr=1e-3, **flags)
    if name == "adafactor":
        return torch.optim.Adafactor(params, lr=1e-3, **flags)
    raise ValueError(f"torch.optim has no {name}")


def main() -> None:
    torch.set_grad_enabled(False)
    cases = {}
    for line in sys.stdin:
        request = json.loads(line)
        cmd = request["cmd"]
        try:
            if cmd == "versions":
                if request.get("threads"):
                    torch.set_num_threads(request["threads"])
                reply = {"ok": True, "torch": torch.__version__, "threads": torch.get_num_threads()}
            elif cmd == "setup":
                params, grads = make_arrays([tuple(s) for s in request["shapes"]], request["seed"])
                tensors = [torch.from_numpy(p).requires_grad_(True) for p in params]
                for t, g in zip(tensors, grads):
                    t.grad = torch.from_numpy(g)
                opt = make_optimizer(request["optimizer"], tensors, request["variant"])
                start = time.perf_counter()
                opt.step()
                first = time.perf_counter() - start
                state_bytes = sum(
                    v.numel() * v.element_size()
                    for s in opt.state.values()
                    for v in s.values()
                    if torch.is_tensor(v) and v.numel() > 1
                )
                cases[request["id"]] = opt
                reply = {"ok": True, "first_s": first, "state_bytes": state_bytes}
            elif cmd == "run":
                opt = cases[request["id"]]
                start = time.perf_counter()
                for _ in range(request["reps"]):
                    opt.step()
                reply = {"ok": True, "seconds": time.perf_counter() - start}
            elif cmd == "free":
                cases.pop(request["id"], None)
                reply = {"ok": True}
            elif cmd == "bandwidth":
                n = request["n"]
                a, b, c = torch.zeros(n), torch.ones(n), torch.ones(n)
                seconds = []
                for _ in range(request["trials"]):
                    start = time.perf_counter()
                    torch.add(b, c, alpha=0.5, out=a)
                    seconds.append(time.perf_counter() - start)
                reply = {"ok": True, "seconds": seconds}
            else:
                reply = {"ok": False, "why": f"unknown command {cmd!r}"}
        except Exception as e:  # noqa: BLE001  (reported to the parent, which marks it n/a)
            reply = {"ok": False, "why": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
