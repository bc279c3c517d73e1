"""What a finished run shows and publishes: the model card (`card`, with its ranking, enhancement
and sample-generation sections), its plots (`plots`), TensorBoard (`tensorboard_server`) and
real-browser screenshots of it (`screenshot`), and the explicit Hugging Face deploy (`deploy`).
Reads runs only through `runs/`."""
