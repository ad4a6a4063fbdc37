"""A Llama-2-style causal LM (transformers `LlamaForCausalLM`) wrapped as a LightningModule.

Paper §3.1 (arXiv 2409.02326): Arctic-SnowCoder-1.3B has hidden size 2048, FFN 5632, 24 layers, 16 attention heads
and 16 KV heads, vocabulary 64000, context 8192, RoPE and tied input/output embeddings. Building on the transformers
class keeps checkpoints in Hugging Face format (`trainer/export.py`), which transformers and vLLM load as they are.
The module is configured by `conf/train/*.yaml` through `python -m trainer fit` (see `trainer/cli.py`).
"""

from __future__ import annotations

import lightning.pytorch as pl

from codemill.config import ConfigError
from trainer.export import init_source_problem, load_weights
from trainer.schedules import ScheduleKind, lambda_lr, validate_schedule


class CodeLM(pl.LightningModule):
    """Next-token prediction on `(B, seq_len + 1)` token batches.

    Architecture args mirror `LlamaConfig`; `vocab_size` and `seq_len` are linked from the shard manifest by the
    CLI. `lr`, `min_lr`, `schedule` and `warmup_steps` define the phase's schedule (`trainer/schedules.py`), whose
    length is the trainer's number of optimizer steps. `init_from` starts from earlier weights (a Hugging Face
    export folder or a Lightning `.ckpt`) with a fresh optimizer and schedule: that is how phase N+1 follows phase N.
    """

    def __init__(self, *, vocab_size: int = 64000, seq_len: int = 8192, hidden_size: int = 2048,
                 intermediate_size: int = 5632, num_layers: int = 24, num_heads: int = 16, num_kv_heads: int = 16,
                 max_position_embeddings: int = 8192, rope_theta: float = 10000.0, rms_norm_eps: float = 1e-5,
                 tie_word_embeddings: bool = True, initializer_range: float = 0.02,
                 attn_implementation: str = "sdpa", gradient_checkpointing: bool = False,
                 lr: float = 5.3e-4, min_lr: float = 5.3e-5, schedule: ScheduleKind = "cosine",
                 warmup_steps: int = 600, weight_decay: float = 0.1, betas: tuple[float, float] = (0.9, 0.95),
                 eps: float = 1e-8, init_from: str | None = None):
        super().__init__()
        problems = validate_schedule(kind=schedule, peak_lr=lr, warmup_steps=warmup_steps, min_lr=min_lr,
                                     prefix="model.")
        if hidden_size % num_heads:
            problems.append(f"model.num_heads: {num_heads} does not divide hidden_size {hidden_size}")
        if num_heads % num_kv_heads:
            problems.append(f"model.num_kv_heads: {num_kv_heads} does not divide num_heads {num_heads}")
        if seq_len > max_position_embeddings:
            problems.append(f"model.max_position_embeddings: {max_position_embeddings} < shard seq_len {seq_len}")
        if init_from is not None:

            problems += init_source_problem(init_from)
        if problems:
            raise ConfigError(problems)
        self.save_hyperparameters()
        self.model = None  # built in configure_model, inside the strategy's context (ZeRO-3 shards it at birth)

    def llama_config(self):
        from transformers import LlamaConfig

        h = self.hparams
        return LlamaConfig(
            vocab_size=h.vocab_size, hidden_size=h.hidden_size, intermediate_size=h.intermediate_size,
            num_hidden_layers=h.num_layers, num_attention_heads=h.num_heads, num_key_value_heads=h.num_kv_heads,
            max_position_embeddings=h.max_position_embeddings, rms_norm_eps=h.rms_norm_eps,
            rope_parameters={"rope_type": "default", "rope_theta": h.rope_theta},
            tie_word_embeddings=h.tie_word_embeddings, initializer_range=h.initializer_range, hidden_act="silu",
            attention_bias=False, mlp_bias=False, use_cache=False, bos_token_id=None, eos_token_id=None,
            attn_implementation=h.attn_implementation,
        )

    def configure_model(self) -> None:
        if self.model is not None:
            return
        from transformers import LlamaForCausalLM

        self.model = LlamaForCausalLM(self.llama_config())
        if self.hparams.gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
        if self.hparams.init_from:

            load_weights(self.model, self.hparams.init_from)

    def num_parameters(self) -> int:
        """Unique trainable parameters (tied embeddings counted once)."""
        return sum(p.numel() for p in {id(p): p for p in self.model.parameters()}.values())

    def flops_per_token(self) -> float:
        """Training FLOPs per token: 6N for the matmuls plus 12·L·H·T for attention (PaLM, arXiv 2204.02311 App. B)."""
        h = self.hparams
        return 6.0 * self.num_parameters() + 12.0 * h.num_layers * h.hidden_size * h.seq_len

    def forward(self, input_ids):
        return self.model(input_ids=input_ids).logits  # (B, T, V)

    def _loss(self, batch):
        import torch.nn.functional as F

        x, y = batch[:, :-1], batch[:, 1:]  # (B, T) each: contract x = ids[:-1], y = ids[1:]
        logits = self(x)
        return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1))

    def on_train_start(self) -> None:
        # Lightning 2.6 builds the train loader early when configure_optimizers asks for estimated_stepping_batches
        # and then skips re-applying the loader state saved in the checkpoint (FitLoop.setup_data returns early).
        # Applying it here restores litdata's sample position, so a resumed run sees exactly the batches it missed.
        self.trainer.fit_loop._load_combined_loader_states()

    def training_step(self, batch, batch_idx):
        loss = self._loss(batch)
        self.log("train/loss", loss, on_step=True, prog_bar=True, batch_size=batch.size(0))
        return loss

    def validation_step(self, batch, batch_idx):
        loss = self._loss(batch)
        self.log("val/loss", loss, on_epoch=True, sync_dist=True, batch_size=batch.size(0))

    def configure_optimizers(self):
        import torch

        h = self.hparams
        # No weight decay on norms and biases (1-D tensors), as in Llama-2 and most LM recipes.
        decay = [p for p in self.parameters() if p.requires_grad and p.dim() >= 2]
        no_decay = [p for p in self.parameters() if p.requires_grad and p.dim() < 2]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": h.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=h.lr, betas=tuple(h.betas), eps=h.eps,
        )
        # estimated_stepping_batches counts optimizer steps (max_steps, or epochs x batches / accumulation).
        scheduler = lambda_lr(optimizer, kind=h.schedule, peak_lr=h.lr, warmup_steps=h.warmup_steps,
                              total_steps=int(self.trainer.estimated_stepping_batches), min_lr=h.min_lr)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
