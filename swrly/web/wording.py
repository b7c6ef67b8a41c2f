"""How the pages word a message: sentence case and a full stop (docs/architecture.md, "Words
we use"). Services raise lower-case texts, as the API shows them in its error bodies; pages
show them as sentences."""


def sentence(text: str) -> str:
    """`text` with a capital first letter and a closing full stop (unless it ends in . ! ?)."""
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."
