"""The relation classifier (RC): prompt, TGI client, service, LoRA training, evaluation."""
