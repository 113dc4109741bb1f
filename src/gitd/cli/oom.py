"""What to say when a GPU runs out of memory: one line per command, naming the flags that fix
it. ``gitd.cli.main`` turns any such error into that line (exit 2, finished work kept)."""

from __future__ import annotations

# Per command: the flags that lower its peak GPU memory, the most effective first.
FIXES = {
    "distill": "--offload model (or sequential: least memory), a smaller --generate-batch-size, "
               "--caption-batch-size, --vlm-batch-size or --encode-batch-size, or a smaller "
               "--resolution",
    "finetune": "a smaller --micro-batch (auto measures what fits the free memory), "
                "--gradient-checkpointing, or --mixed-precision fp16/bf16",
    "caption": "--offload model (or sequential: least memory) or a smaller --vlm-batch-size",
    "evaluate": "a smaller --batch-size or --image-size",
    "select": "a smaller --image-size, or --device cpu",
    # gitd benchmark makes sets with gitd distill/select, then evaluates them.
    "benchmark": "a smaller --batch-size or --image-size for the evaluation, or a --config file "
                 "setting offload: model and smaller batch sizes for the distillations",
}
GENERIC = "smaller batches or a smaller resolution"


def is_out_of_memory(exc: BaseException) -> bool:
    """A GPU allocation failure: ``torch.OutOfMemoryError`` (CUDA), or the ``RuntimeError``
    that MPS and older CUDA builds raise with "out of memory" in it. Recognised without
    importing torch (a command that never loaded it cannot have raised it)."""
    if any(cls.__name__ == "OutOfMemoryError" for cls in type(exc).__mro__):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def out_of_memory_line(command: str | None) -> str:
    """The one line for ``gitd COMMAND`` (without the ``gitd COMMAND: error:`` prefix)."""
    fixes = FIXES.get(command or "", GENERIC)
    return (f"the GPU ran out of memory; retry with {fixes} (other processes on the GPU count "
            "too: see nvidia-smi); finished work is kept, re-run the command to resume")
