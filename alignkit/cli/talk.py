"""`alignkit generate` (a file of prompts -> JSONL) and `alignkit chat` (interactive, streamed)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from alignkit.cli.common import CommandError, WithDefaults, sampling_arguments
from alignkit.utils import sampling_defaults as defaults


def add_commands(sub) -> None:
    p = sub.add_parser("generate", help="generate responses to a file of prompts", formatter_class=WithDefaults)
    p.add_argument("model")
    p.add_argument("--prompts", required=True,
                   help="one prompt per line, or JSONL with a 'prompt' field (a string or a list of messages)")
    form = p.add_mutually_exclusive_group()
    form.add_argument("--chat", action="store_true",
                      help="ask each prompt as a user message (the chat template); the default for a model with a "
                           "chat template")
    form.add_argument("--raw", action="store_true",
                      help="continue each string prompt as plain text, as plain-text training data is trained")
    p.add_argument("--out", help="write JSONL here (default: stdout)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    sampling_arguments(p, max_new_tokens=defaults.MAX_NEW_TOKENS)
    p.add_argument("--batch-size", type=int, default=defaults.BATCH_ROWS, help="rows decoded together")
    p.add_argument("--seed", type=int, default=0, help="seeds each prompt's random stream when sampling")
    p.set_defaults(run=generate)
    p = sub.add_parser("chat", help="talk to a model interactively", formatter_class=WithDefaults)
    p.add_argument("model")
    sampling_arguments(p, max_new_tokens=defaults.CHAT_REPLY_TOKENS)
    p.set_defaults(run=chat)


def read_prompts(path: str) -> list:
    """One prompt per line, or JSONL with a `prompt` field (a string or a list of messages)."""
    prompts = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise CommandError(f"{path}:{number}: not valid JSON ({e.msg})")
            if "prompt" not in row:
                raise CommandError(f"{path}:{number}: field 'prompt': missing")
            prompts.append(row["prompt"])
        else:
            prompts.append(line)
    if not prompts:
        raise CommandError(f"{path}: no prompts")
    return prompts


def as_chat(tokenizer, args) -> bool:
    """`generate`: a model with a chat template is asked in conversations, as chat models are trained, unless --raw;
    --chat asks for it (and fails on a model without a template)."""
    if args.raw:
        return False
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if args.chat and not has_template:
        raise CommandError(f"{args.model} has no chat template; leave out --chat (or use --raw)")
    return has_template


def conversation(prompt, system: str | None) -> list[dict]:
    from alignkit.data import user_turn

    turns = user_turn(prompt)
    if system and not (turns and turns[0].get("role") == "system"):
        turns = [{"role": "system", "content": system}, *turns]
    return turns


def generate(args) -> int:
    from alignkit.models import load_causal_lm, load_tokenizer
    from alignkit.rollouts import SamplingSettings, generate
    from alignkit.utils.io import atomic_write_text

    prompts = read_prompts(args.prompts)
    if args.out and Path(args.out).exists() and not args.overwrite:
        raise CommandError(f"{args.out} exists; pass --overwrite to replace it")
    tokenizer = load_tokenizer(args.model)
    if as_chat(tokenizer, args):
        prompts = [conversation(p, args.system) for p in prompts]
    elif args.system:
        raise CommandError("--system needs a conversation: leave out --raw (the model needs a chat "
                         "template)")
    model = load_causal_lm(args.model)
    settings = SamplingSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                                seed=args.seed)
    responses = generate(model, tokenizer, prompts, settings, precision=args.precision,
                         batch_size=args.batch_size).texts
    lines = "".join(json.dumps({"prompt": p, "response": r}, ensure_ascii=False) + "\n" for p, r in zip(prompts, responses))
    if args.out:
        atomic_write_text(args.out, lines)
    else:
        sys.stdout.write(lines)
    return 0


def chat(args) -> int:
    from alignkit.models import load_causal_lm, load_tokenizer
    from alignkit.rollouts import SamplingSettings
    from alignkit.rollouts.engine import stream

    tokenizer = load_tokenizer(args.model)
    model = load_causal_lm(args.model)
    start = [{"role": "system", "content": args.system}] if args.system else []
    history: list[dict] = list(start)
    settings = SamplingSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p)
    print("Chatting with", args.model, "- /reset clears the conversation, /exit or Ctrl-D quits, Ctrl-C stops a "
          "reply.", flush=True)
    while True:
        try:
            line = input("you> ")
        except EOFError:
            print()
            return 0
        except KeyboardInterrupt:  # at the prompt, Ctrl-C quits as Ctrl-D does
            print()
            return 130
        if line.strip() == "/exit":
            return 0
        if line.strip() == "/reset":
            history = list(start)
            continue
        if not line.strip():
            continue
        history.append({"role": "user", "content": line})
        print("model> ", end="", flush=True)
        shown: list[str] = []

        def show(piece: str) -> None:
            if not any(shown):  # the reply as printed is the reply as kept: no leading whitespace
                piece = piece.lstrip()
            shown.append(piece)
            print(piece, end="", flush=True)

        try:
            reply = stream(model, tokenizer, history, show, settings, precision=args.precision)
        except KeyboardInterrupt:  # Ctrl-C stops the reply; what was shown is kept, and the chat goes on
            print(" [stopped]", flush=True)
            history.append({"role": "assistant", "content": "".join(shown).strip()})
            continue
        print(flush=True)
        if reply.cut:
            print(f"[cut at {args.max_new_tokens} tokens: --max-new-tokens]", flush=True)
        history.append({"role": "assistant", "content": reply.text})
