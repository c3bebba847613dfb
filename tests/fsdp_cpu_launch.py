"""Run a training script under FSDP on CPU ranks (gloo), for the tests: `accelerate launch --config_file
configs/accelerate/fsdp.yaml ... tests/fsdp_cpu_launch.py train.py ARGS` with `ACCELERATE_USE_CPU=true`.

Accelerate 1.15 turns FSDP on only for accelerator devices: `AcceleratorState` reads `ACCELERATE_USE_FSDP` when the
process group is MULTI_GPU (or another device's) and never for MULTI_CPU, so on CPUs `--use_fsdp` silently trains
with plain data parallelism. PyTorch's FSDP2 itself shards over gloo on CPUs. This launcher brings the process
group up as Accelerate does for CPU ranks, then labels it MULTI_GPU, which is what the group of a GPU run is
labelled before `AcceleratorState` switches it to FSDP; from there on the script runs Accelerate's own FSDP path.
"""

import runpy
import sys
from pathlib import Path

from accelerate import PartialState
from accelerate.utils import DistributedType

if __name__ == "__main__":
    state = PartialState(cpu=True)
    if state.distributed_type != DistributedType.MULTI_CPU:
        sys.exit(
            f"fsdp_cpu_launch.py: expected CPU ranks (ACCELERATE_USE_CPU=true), got {state.distributed_type}"
        )
    PartialState._shared_state["distributed_type"] = DistributedType.MULTI_GPU
    script, *arguments = sys.argv[1:]
    sys.argv = [script, *arguments]
    sys.path[0] = str(Path(script).resolve().parent)  # as `python SCRIPT` has it: the script's folder first
    runpy.run_path(script, run_name="__main__")
