"""One action per capability, shared by every door (the page, the Gradio API, MCP, the OpenAI- and
AUTOMATIC1111-compatible routes): each takes the pipeline's frozen params and the caller's names, asks the model
host for the model, and keeps what came out in History. By topic: `images`, `text`, `library`, `vae`.
Nothing here imports gradio or a tab."""
