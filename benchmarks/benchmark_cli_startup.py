"""Wall time of `pixelgen` calls that only parse arguments (help, argument errors), in fresh interpreters.

    python benchmarks/benchmark_cli_startup.py [--baseline-src OLD_CHECKOUT/src] [--rounds 3]

With `--baseline-src`, the two source trees alternate call by call and medians are reported side by side.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


CALLS = (["--help"], ["generate", "--help"], ["generate", "--steps", "x"], ["convert"], ["labels", "crane"])


def time_call(src: str, argv: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": src, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pixelgen_diffusers.cli", *argv], env=env, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-src", help="the src/ folder of another checkout, timed alternately")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    trees = {"this": str(Path(__file__).resolve().parents[1] / "src")}
    if args.baseline_src:
        trees["baseline"] = args.baseline_src
    times = {(name, " ".join(argv)): [] for name in trees for argv in CALLS}
    for _ in range(args.rounds):
        for argv in CALLS:
            for name, src in trees.items():
                times[(name, " ".join(argv))].append(time_call(src, argv))
    for argv in CALLS:
        row = "  ".join(f"{name} {statistics.median(times[(name, ' '.join(argv))]):6.2f} s" for name in trees)
        print(f"pixelgen {' '.join(argv):22s} {row}")


if __name__ == "__main__":
    main()
