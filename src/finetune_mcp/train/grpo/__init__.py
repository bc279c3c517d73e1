"""Group Relative Policy Optimisation with verifiable rewards (`method="grpo"`), entropy-aware.

`workflow.train_grpo` builds TRL's GRPOTrainer on prompt-only rows; `trainer.FusedGRPOTrainer`
replaces its loss with `loss.fused_grpo_loss` (the project's fused kernel: log p and H without
logits, the global top-entropy mask, an optional entropy bonus); `rewards/` holds the built-in
rewards, the loader of allowed user rewards and their preflight.
"""
