"""GenAI Studio pipelines: all model code; importable without gradio."""
