"""benchmarks/gpu_check.py --tiny: the GPU check's code paths (eager, regional and whole-model compile, the CUDA-graph
case, the student shape, the text-to-image case, FLOP counting, JSON out) on CPU, so the script cannot rot."""

import importlib.util
import json
from pathlib import Path

from pixelgen_diffusers import PixelGenScheduler


SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"


def _rows(method, steps, batch, timeshift, interval, guided_rows=2):
    """Transformer rows of one sampling run: guided evaluations run the batch twice."""
    scheduler = PixelGenScheduler(sampling_method=method, timeshift=timeshift, solver_order=2)
    scheduler.set_timesteps(steps)
    return sum(batch * (guided_rows if guided else 1) for guided in scheduler.guidance_mask(*interval))


def test_tiny_gpu_check_runs_every_case_and_counts_its_work(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    results = gpu_check.main(["--tiny", "--repeats", "1", "--json", str(tmp_path / "out.json")])
    assert json.loads((tmp_path / "out.json").read_text()) == json.loads(json.dumps(results))
    cases = results["cases"]
    expected = {"xl eager", "xl blocks", "xl model", "xl-batch1 cuda-graphs", "student eager", "student blocks",
                "student-batch1 cuda-graphs", "xxl-t2i eager", "xxl-t2i blocks"}  # fmt: skip
    assert set(cases) == expected and not any("skipped" in case for case in cases.values())
    heun_rows = _rows("heun", 3, 2, 2.0, (0.1, 0.9))
    assert heun_rows > 5 * 2  # some evaluations are guided, some not (the interval)
    for name in ("xl eager", "xl blocks", "xl model"):
        assert cases[name]["rows_per_run"] == heun_rows, name
    assert cases["xl-batch1 cuda-graphs"]["rows_per_run"] == _rows("heun", 3, 1, 2.0, (0.1, 0.9))
    assert cases["student eager"]["rows_per_run"] == cases["student blocks"]["rows_per_run"] == 4 * 2
    assert cases["student-batch1 cuda-graphs"]["rows_per_run"] == 4
    assert cases["xxl-t2i eager"]["rows_per_run"] == _rows("adam_lm", 3, 2, 3.0, (0.0, 1.0))
    for case in cases.values():
        assert case["images_per_s"] > 0 and case["tflops_per_s"] > 0 and case["mfu"] is None  # no peak on CPU
    assert results["xl_gflops_per_row"] > 0 and results["xxl_gflops_per_row"] > 0
