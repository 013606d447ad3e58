"""Tensor and expert parallelism over ``torch.distributed`` (DESIGN.md §6): NCCL when the ranks run on CUDA, gloo on
the CPU.

How a model is split (``layout.py``, ``shard.py``): the model code has no parallel branches. A rank's model is the
same model with smaller shapes: :func:`shard_model` replaces every parameter by the rank's shard (attention by q
heads with their gates, kv heads split or replicated; Gated DeltaNet by whole head groups with their conv channels,
decay parameters and states; MoE by each expert's intermediate dim, ``moe_parallel="tp"``, or by experts,
``"ep"``; shared expert and dense MLP by intermediate dim; embedding and lm_head by vocab rows), adds an all-reduce
after every token mixer and every MoE / MLP block (forward hooks: the row-parallel out projections and the experts
of other ranks give partial sums), and swaps in the vocab-parallel embedding (masked lookup + all-reduce) and
lm_head (local logits + all-gather: every rank gets the full logits). The caches follow (``model.cache_config``:
the rank's head counts). :func:`load_sharded` builds the model on the meta device, shards it and loads a plan
rewritten to the rank's slices, so each rank reads only its own bytes of the memory-mapped checkpoint (both expert
layouts).

How the engine runs (``runner.py``, ``session.py``): **rank 0 schedules and broadcasts the StepPlan**. Rank 0 owns
tokenization, scheduling, stop checks and outputs; before each step it sends the step's plan (plain picklable data)
over a gloo control group, and every rank runs that plan through its own, unchanged ``ModelRunner.execute``: the
forward on its shard, the gathered logits, and the same sampler with the plan's seeds. Only rank 0's tokens are
used (the others' equal results are dropped; running the sampler everywhere keeps penalty state and CUDA-graph
buffers in step at no cost). Vision features (the replicated tower runs on rank 0 only) travel once per prompt.

Worker lifecycle (``launch.py``, ``worker.py``, ``engine.py``):

- ``q35.LLM(path, tensor_parallel_size=N)`` in a plain Python process: the process is rank 0 and starts N-1 fresh
  interpreters (``python -m qwen35_native.parallel.worker``; spawned, not forked: the user's script is not re-run
  and needs no main guard). Rendezvous is a TCP store on a free local port; workers report joining / loaded /
  ready / their traceback there and rank 0 waits for each stage while watching the processes (a worker failing at
  start-up is a clear error naming its rank, never a hang). Afterwards a monitor thread watches them: if one dies,
  the next call raises ``RankFailure`` naming it (an NCCL group is aborted so that a pending collective returns;
  gloo fails at once when a peer's sockets close). ``llm.shutdown()`` (also ``with q35.LLM(...)`` and interpreter
  exit) tells the workers to leave, waits, then terminates what is left; workers also exit by themselves when rank
  0's process disappears.
- Under ``torchrun --nproc-per-node N``: every rank runs the script and ``q35.LLM(path, tensor_parallel_size=N)``
  joins the existing world (``cuda:LOCAL_RANK``). ``generate`` / ``chat`` on ranks > 0 follow rank 0's call (their
  own arguments are ignored) and **return rank 0's results** (streams yield rank 0's deltas), so an SPMD script
  behaves the same on every rank; ``llm.rank`` says which rank prints. ``shutdown()`` on a rank > 0 runs rank 0's
  steps until rank 0 shuts down (what ``qwen35 chat`` does on those ranks).
- A tensor-parallel size that does not divide the counts it splits is refused before anything starts, naming them
  (:func:`check_tensor_parallel`). Collectives time out after ``QWEN35_TP_TIMEOUT`` seconds (default 600).

Memory per rank for the released sizes: :func:`rank_memory`, ``python -m qwen35_native.parallel.memory``.

Tests: tests/parallel/ (test_tp_group.py: spawned 4-process gloo group, worlds of 4 and 2; test_layout.py;
test_llm_tp.py; test_cli_tp.py: torchrun and spawned CLI; test_gpu_nccl.py: -m gpu).
"""

from .groups import TPContext
from .layout import ShardSpec, check_tensor_parallel, param_specs
from .loading import load_sharded
from .memory import RankMemory, memory_table, rank_memory
from .session import RankFailure
from .shard import shard_model, shard_plan, take_shard

__all__ = ["RankFailure", "RankMemory", "ShardSpec", "TPContext", "check_tensor_parallel", "load_sharded",
           "memory_table", "param_specs", "rank_memory", "shard_model", "shard_plan", "take_shard"]
