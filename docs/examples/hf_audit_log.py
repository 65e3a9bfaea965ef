"""Write a ``tilt.audit`` log (JSON Lines, docs/audit.md) from any Hugging Face causal LM.

Not part of tilt and not imported by it: it needs ``torch`` and ``transformers``
(``pip install torch transformers``), which tilt does not depend on.

For each prompt it samples ``--rollouts`` responses from the model at
temperature 1 (no top-k/top-p: the audit needs the log-probabilities of the
distribution the rollouts were drawn from), grades them with ``--answer``, and
scores every response under

* the student prompt: the chat template applied to the prompt's messages;
* the SDPO teacher prompt, once per demonstration: the prompt's system messages
  followed by one user message built with SDPO's default templates
  (lasgroup/SDPO, ``verl/trainer/config/actor/actor.yaml`` and
  ``_build_teacher_message`` in ``verl/trainer/ppo/ray_trainer.py``)::

      reprompt_template = "{prompt}{solution}{feedback}\\n\\nCorrectly solve the original question."
      solution_template = "\\nCorrect solution:\\n\\n{successful_previous_attempt}"

  with ``<think>...</think>`` removed from the demonstration and no feedback.
  The demonstration is a *successful sibling* (another correct response to the
  same prompt, never the response itself), drawn uniformly from the
  successful siblings (SDPO takes the first one, which is a uniform draw when
  responses are exchangeable).  The teacher sees the same response tokens,
  appended to the teacher prompt, as in SDPO.

Usage::

    python hf_audit_log.py --model Qwen/Qwen2.5-0.5B-Instruct --data prompts.jsonl \\
        --rollouts 8 --demos-per-rollout 4 --out run.jsonl
    python -m tilt.audit run.jsonl --per-prompt --plot run.png

``prompts.jsonl`` holds one ``{"prompt": "...", "answer": "..."}`` a line; a
response is correct when its last ``\\boxed{...}`` (or, failing that, its last
line) equals the answer after stripping spaces.  Replace :func:`is_correct`
with your verifier.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

REPROMPT_TEMPLATE = "{prompt}{solution}{feedback}\n\nCorrectly solve the original question."
SOLUTION_TEMPLATE = "\nCorrect solution:\n\n{successful_previous_attempt}"


def is_correct(response: str, answer: str) -> bool:
    """The last ``\\boxed{...}`` (or the last line) equals ``answer``, spaces ignored."""
    boxed = re.findall(r"\\boxed\{([^{}]*)\}", response)
    lines = response.strip().splitlines()
    given = boxed[-1] if boxed else (lines[-1] if lines else "")
    return given.replace(" ", "") == answer.replace(" ", "")


def teacher_messages(messages: list[dict], demonstration: str) -> list[dict]:
    """SDPO's teacher prompt: system messages, then the reprompted last user message."""
    demo = re.sub(r"<think>.*?</think>\s*", "", demonstration, flags=re.DOTALL)
    text = REPROMPT_TEMPLATE.format(
        prompt=messages[-1]["content"],
        solution=SOLUTION_TEMPLATE.format(successful_previous_attempt=demo),
        feedback="",
    )
    return [*messages[:-1], {"role": "user", "content": text}]


@torch.no_grad()
def token_log_probs(model, tokenizer, messages: list[dict], response: torch.Tensor) -> list[float]:
    """``log p(response token t | prompt, earlier response tokens)`` for every response token."""
    prompt = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt"
    ).to(model.device)
    ids = torch.cat([prompt, response[None].to(model.device)], dim=1)
    logits = model(ids).logits[0, prompt.shape[1] - 1 : -1].float()
    values = torch.log_softmax(logits, dim=-1).gather(1, response[:, None].to(model.device))
    return [min(float(v), 0.0) for v in values[:, 0]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, help="JSON Lines of {prompt, answer}")
    parser.add_argument("--rollouts", type=int, default=8)
    parser.add_argument("--demos-per-rollout", type=int, default=1)
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.float32)
    model.eval()
    with Path(args.out).open("w") as out:
        for p, line in enumerate(Path(args.data).read_text().splitlines()):
            item = json.loads(line)
            messages = [{"role": "user", "content": item["prompt"]}]
            prompt = tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt"
            ).to(model.device)
            generated = model.generate(
                prompt,
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                num_return_sequences=args.rollouts,
                max_new_tokens=args.max_new_tokens,
                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
            )
            responses = []
            for row in generated[:, prompt.shape[1] :]:
                # up to and including the first end-of-sequence token (part of the rollout)
                hits = (row == tokenizer.eos_token_id).nonzero()
                end = int(hits[0, 0]) + 1 if hits.numel() else row.numel()
                responses.append(row[:end].cpu())
            texts = [tokenizer.decode(r, skip_special_tokens=True) for r in responses]
            correct = [is_correct(t, item["answer"]) for t in texts]
            for j, response in enumerate(responses):
                tokens = token_log_probs(model, tokenizer, messages, response)
                siblings = [i for i in range(len(responses)) if i != j and correct[i]]
                demos = rng.sample(siblings, min(args.demos_per_rollout, len(siblings)))
                teacher = []
                for d in demos:
                    t_tokens = token_log_probs(
                        model, tokenizer, teacher_messages(messages, texts[d]), response
                    )
                    teacher.append({"demo": d, "logp": sum(t_tokens), "token_logp": t_tokens})
                record = {
                    "prompt": p,
                    "rollout": j,
                    "correct": correct[j],
                    "logp": sum(tokens),
                    "token_logp": tokens,
                    "teacher": teacher,
                }
                out.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
