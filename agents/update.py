"""One learning update of the training loop: draw a batch from the replay, take a gradient step, and give
the sampled transitions their new priorities (prioritized replay).

On a GPU, the update of a network this small is bound by kernel launches, not by arithmetic: some 150
small kernels, each launched from Python (scripts/bench/end_to_end.py measured about 200 eager updates
per second on an H200, and 1,300 with the graph). With `cuda_graph=True` the whole update, sampling
included, is captured once as a CUDA graph and then replayed with one launch. What needs the host stays around the graph: the replay's
bookkeeping of the slots added since the last update (`prepare_sample`), and the update count and
target-network copy (`step_done`). The graph reads the replay, the networks and the optimizer state where
they are, which is why all of them are updated in place.
"""

from __future__ import annotations

import sys

import torch

from agents.agent import DQNAgent
from agents.replay.frame import Batch

# Eager updates (real ones) before the capture, on a side stream as CUDA graphs require: they create the
# optimizer state, cuBLAS and cuDNN workspaces and any compiled kernels, none of which can be made
# while capturing.
WARMUP_UPDATES = 3


class UpdateStep:
    def __init__(self, agent: DQNAgent, replay, batch_size: int, prioritized: bool, cuda_graph: bool = False):
        if cuda_graph and agent.device.type != "cuda":
            raise ValueError(f"train.cuda_graph needs the learner on a CUDA device; it is on {agent.device}")
        if cuda_graph and replay.device.type != "cuda":
            raise ValueError(f"train.cuda_graph needs the replay on the learner's device ({agent.device}); "
                             f"it is on {replay.device}")
        self.agent, self.replay, self.batch_size, self.prioritized = agent, replay, batch_size, prioritized
        self.cuda_graph = cuda_graph
        self.graph: torch.cuda.CUDAGraph | None = None
        self.outputs: dict[str, torch.Tensor] = {}
        self.warmups = 0

    def __call__(self) -> dict[str, torch.Tensor]:
        """One update. Returns the loss and the mean Q of the taken actions (device tensors); the
        batch's slots are in self.outputs["index"] until the next update."""
        if not self.cuda_graph:
            out = self.outputs = self._update(self.replay.sample(self.batch_size))
        else:
            self.replay.prepare_sample(self.batch_size)
            out = self._graphed()
        self.agent.step_done()
        return out

    def _update(self, batch: Batch) -> dict[str, torch.Tensor]:
        out = self.agent.gradient_step(batch)
        if self.prioritized:
            self.replay.update_priorities(batch.index, out["priority"])
        return out | {"index": batch.index}

    def _graphed(self) -> dict[str, torch.Tensor]:
        main = torch.cuda.current_stream(self.agent.device)
        if self.graph is None and self.warmups < WARMUP_UPDATES:
            if self.warmups == 0:  # after any checkpoint was loaded, which restores the optimizer's settings
                for group in self.agent.optimizer.param_groups:
                    # torch.optim refuses capture unless the step count stays on the device
                    if "capturable" in group:
                        group["capturable"] = True
            side = torch.cuda.Stream(self.agent.device)
            side.wait_stream(main)
            with torch.cuda.stream(side):
                self.outputs = self._update(self.replay.draw(self.batch_size))
            main.wait_stream(side)
            self.warmups += 1
            return self.outputs
        if self.graph is None:
            try:
                self._capture()
            except Exception as e:  # noqa: BLE001 - an op that cannot be captured: eager still works
                print(f"warning: CUDA graph capture failed ({type(e).__name__}: {e}); continuing eager", file=sys.stderr)
                self.cuda_graph = False
                self.outputs = self._update(self.replay.draw(self.batch_size))
                return self.outputs
        self.graph.replay()
        # The graph's outputs (self.outputs) are overwritten by its next replay: one copy of the two
        # figures the loop keeps (each kernel launch counts here).
        loss, q = self.outputs["stats"].clone()
        return {"loss": loss, "q": q}

    def _capture(self) -> None:
        graph = torch.cuda.CUDAGraph()
        # The replay draws from its own generator, and IQN's action selection from the agent's: each
        # replay of the graph advances them (the default generator, behind noisy layers and IQN's
        # fractions, is registered by the capture itself).
        graph.register_generator_state(self.replay.generator)
        graph.register_generator_state(self.agent.generator)
        # Gradients are allocated in the graph's memory, at the same addresses on every replay.
        self.agent.optimizer.zero_grad(set_to_none=True)
        # thread_local: an evaluation thread may use the GPU meanwhile.
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            out = self._update(self.replay.draw(self.batch_size))
            self.outputs = out | {"stats": torch.stack([out["loss"], out["q"]])}
        self.graph = graph
