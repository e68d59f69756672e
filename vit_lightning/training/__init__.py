"""What `ViTClassifier` (vit_lightning/module.py) trains with beyond the loss: the learning-rate
schedule (`schedule`), fine-tuning's freezing and layer decay (`finetune`), and DeiT's
distillation from a teacher (`distill`)."""
