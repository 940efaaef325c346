"""I2P prompts are sampled at their own evaluation guidance (ANT Table 1), in the table's order."""
from types import SimpleNamespace

import numpy as np
import pandas as pd

from unlearnkit.experiments import evaluation
from unlearnkit.sampling import SamplerSettings


def test_generate_frame_samples_each_prompt_at_its_own_guidance(monkeypatch):
    calls = []

    def fake_generate(world, edit, prompts, seeds, cache_dir, settings, sld=None, safety_text=None):
        calls.append((list(prompts), settings.guidance_scale))
        return np.stack([np.full((2, 2, 3), int(s), dtype=np.uint8) for s in seeds])

    monkeypatch.setattr(evaluation, "generate_edited", fake_generate)
    world = SimpleNamespace(sampler=SamplerSettings(num_inference_steps=4, guidance_scale=7.5))
    frame = pd.DataFrame({"prompt": ["a", "b", "c", "d"], "seed": [10, 11, 12, 13], "guidance": [7.0, 12.0, 7.0, 9.0]})
    images = evaluation.generate_frame(world, None, frame, "unused")
    assert [int(image[0, 0, 0]) for image in images] == [10, 11, 12, 13]          # table order kept
    assert sorted(calls, key=lambda c: c[1]) == [(["a", "c"], 7.0), (["d"], 9.0), (["b"], 12.0)]
    calls.clear()
    evaluation.generate_frame(world, None, frame.drop(columns="guidance"), "unused")
    assert calls == [(["a", "b", "c", "d"], 7.5)]                                  # no column: the sampler's
