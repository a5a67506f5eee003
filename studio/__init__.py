"""GenAI Studio: the Gradio app, CLI and app state."""
