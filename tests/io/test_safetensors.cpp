// safetensors: written next.
