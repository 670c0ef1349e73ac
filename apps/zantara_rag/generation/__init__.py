"""Writing the answer: Claude and its fallback chain, the extractive answer, the prompt, the team
directory."""
