"""Put groklab's reasoning tasks to large language models: natural-language prompts with gold
answers (:mod:`groklab.bridge.prompts`), free-text answers scored the papers' way beside the
grokked model (:mod:`groklab.bridge.scoring`). No network calls: the user runs their LLM."""
