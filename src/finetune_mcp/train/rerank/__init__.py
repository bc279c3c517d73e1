"""Qwen3-Reranker fine-tuning: the yes/no prompt (`prompt`), the pointwise/listwise trainer
(`trainer`), the training workflow with ranking metrics before and after (`workflow`) and the
metrics themselves (`metrics`: MRR, NDCG, Recall, Precision, MAP)."""
