"""The model a config asks for: the device it runs on and the encoder (HSTU or SASRec) built there."""

from __future__ import annotations

import torch

from hstu_tutorial.errors import ConfigError
from hstu_tutorial.training.config import ABLATION_DEFAULTS, TrainConfig
from hstu_tutorial.training.log import note

__all__ = ["build_model", "resolve_device"]


def resolve_device(name: str) -> torch.device:
    """The torch device a config's `device` names ("auto": CUDA when torch sees a GPU, else the CPU)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device = {name!r} but torch sees no CUDA GPU; use device = 'cpu' or 'auto'")
    return device


def build_model(cfg: TrainConfig, num_items: int, device: torch.device) -> tuple[torch.nn.Module, str]:
    """The encoder the config asks for, on `device`, and the attention implementation it uses."""
    from hstu_tutorial import modules

    impl = cfg.attention_impl
    if cfg.model == "hstu":
        from hstu_tutorial.modules.stu import switches_text, triton_supports

        switches = {k: getattr(cfg, k) for k in ABLATION_DEFAULTS}
        if impl == "auto":
            impl = "triton" if device.type == "cuda" else "pytorch"
        # attention_impl = "triton" asked with such switches is refused by TrainConfig.validate
        if impl == "triton" and not triton_supports(
            cfg.use_pos_bias, cfg.use_time_bias, cfg.attention_activation
        ):
            note(
                f"{switches_text(**switches)}: the Triton kernel does not cover it; attention runs in PyTorch"
            )
            impl = "pytorch"
        if impl == "triton":
            try:
                import hstu_tutorial.ops.triton.hstu_attention_autograd  # noqa: F401 - can it load?

                # The trainer applies cfg.autotune through the kernel options (Trainer, use_options).
                if cfg.autotune and device.type == "cuda":
                    note(
                        "Triton attention: tile sizes from the table shipped for this GPU family, else "
                        "tuned on first use of a shape (about a minute) and saved in the tile cache "
                        "(~/.cache/hstu_tutorial/triton_tiles); --set autotune=false uses fixed tiles"
                    )
            except Exception as err:  # noqa: BLE001 - any import failure means: use the reference
                note(
                    f"the Triton attention kernel failed to import ({type(err).__name__}: {err}); "
                    "falling back to attention_impl='pytorch'"
                )
                impl = "pytorch"
        model = modules.hstu_encoder(
            num_items,
            embedding_dim=cfg.embedding_dim,
            num_blocks=cfg.num_blocks,
            num_heads=cfg.num_heads,
            dqk=cfg.dqk,
            dv=cfg.dv,
            max_seq_len=cfg.max_seq_len,
            dropout=cfg.dropout,
            attention_impl=impl,
            **switches,
        )
    else:
        if impl == "auto":  # bf16 attention lets SDPA use its flash kernel (benchmarks/bench_sasrec_step.py)
            impl = "sdpa-bf16" if device.type == "cuda" else "sdpa"
        model = modules.sasrec_encoder(
            num_items,
            embedding_dim=cfg.embedding_dim,
            num_blocks=cfg.num_blocks,
            num_heads=cfg.num_heads,
            ffn_hidden=cfg.ffn_hidden,
            max_seq_len=cfg.max_seq_len,
            dropout=cfg.dropout,
            attention_impl=impl,
        )
    if cfg.recompute:  # keep only each block's input; rerun its forward in the backward pass
        from hstu_tutorial.memory import enable_recompute

        enable_recompute(model)
    return model.to(device), impl
