"""The allocator setting every ``python -m matchrepro`` process runs with (matchrepro.allocator):
freed large blocks stay in the process for reuse instead of being unmapped (and mapped and
zero-filled again), the networks' outputs do not change by a bit, and ``MATCHREPRO_MALLOC=system``
keeps glibc's defaults."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO

from matchrepro.allocator import glibc as c_library_is_glibc

glibc = pytest.mark.skipif(c_library_is_glibc() is None, reason="glibc's mallopt only")


def run(code: str, system: bool) -> str:
    env = {k: v for k, v in os.environ.items() if k != "MATCHREPRO_MALLOC"}
    if system:
        env["MATCHREPRO_MALLOC"] = "system"
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout.strip().splitlines()[-1]


KEPT = """
import json, os, torch
from matchrepro.allocator import keep_freed_memory
def resident_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
applied = keep_freed_memory()
before = resident_mib()
t = torch.empty(32 << 20)  # 128 MiB, above glibc's largest mmap threshold
t.fill_(1.0)               # touch every page
del t
print(json.dumps({"applied": applied, "kept_mib": resident_mib() - before}))
"""


@glibc
def test_freed_large_blocks_stay_in_the_process_for_reuse():
    kept = json.loads(run(KEPT, system=False))
    default = json.loads(run(KEPT, system=True))
    assert kept["applied"] is True and default["applied"] is False
    # glibc's default unmaps the freed 128 MiB (to map and zero-fill it again next time); kept, it stays
    assert kept["kept_mib"] > 100 and default["kept_mib"] < 20, (kept, default)


PATCH2PIX = """
import numpy as np, torch
from matchrepro.allocator import keep_freed_memory
from matchrepro.models.patch2pix import Patch2Pix, init_weights, predict
keep_freed_memory()
torch.set_num_threads(1)
# the demo's narrow architecture at 480 x 640: 92 MB correlation volumes, above the mmap threshold
model = Patch2Pix(arch={"widths": [32, 32, 64, 128, 128], "blocks": [1, 1, 1, 1],
                        "regressor_conv": [64, 64], "regressor_fc": [64, 32]})
init_weights(model, seed=0)
g = np.random.default_rng(1)
im1 = torch.from_numpy(g.standard_normal((1, 3, 480, 640)).astype(np.float32))
im2 = torch.roll(im1, shifts=(8, 16), dims=(2, 3))
with torch.no_grad():
    r = predict(model.eval(), im1, im2, threshold=0.0)
np.savez("{out}", matches=r["matches"].numpy(), scores=r["scores"].numpy())
print("ok")
"""


@glibc
def test_patch2pix_outputs_are_bitwise_equal_under_either_setting(tmp_path):
    out = {}
    for system in (False, True):
        path = tmp_path / f"system_{system}.npz"
        assert run(PATCH2PIX.replace("{out}", str(path)), system) == "ok"
        out[system] = np.load(path)
    for key in ("matches", "scores"):
        assert len(out[False][key]) > 0 and np.array_equal(out[False][key], out[True][key]), key


def test_the_cli_applies_it_once_per_process(monkeypatch):
    import matchrepro.cli as cli

    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append(1) or True)
    assert cli.main(["build-demo", "--spec", "not json", "--out", "unused"]) == 1
    assert calls == [1]
