"""ProviderSecret: no formatting, serialization or copying path shows the key; reveal() does."""

import copy
import gc
import json
import logging
import pickle
import secrets
import threading

import pytest
from django.core.serializers.json import DjangoJSONEncoder
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer
from rest_framework.utils.encoders import JSONEncoder as DRFJSONEncoder

from swrly.keys import secret as secret_module
from swrly.keys.errors import SecretDiscarded
from swrly.keys.secret import REDACTED_TEXT, ProviderSecret, live_secrets


@pytest.fixture
def value():
    return "sk-ant-canary-" + secrets.token_hex(16)


@pytest.fixture
def secret(value):
    held = ProviderSecret(value)
    yield held
    held.discard()


def test_reveal_is_the_only_way_to_the_value(secret, value):
    assert secret.reveal() == value


@pytest.mark.parametrize(
    "render",
    [
        str,
        repr,
        ascii,
        format,
        lambda s: format(s, ">40"),
        lambda s: format(s, "d"),
        lambda s: format(s, "!r"),
        lambda s: f"{s}",
        lambda s: f"{s!r}",
        lambda s: f"{s!s}",
        lambda s: f"{s!a}",
        lambda s: f"{s:^60}",
        lambda s: f"{s=}",
        lambda s: "%s" % s,  # noqa: UP031
        lambda s: "%r" % s,  # noqa: UP031
        lambda s: "%a" % (s,),  # noqa: UP031
        lambda s: "%(k)s" % {"k": s},  # noqa: UP031
        lambda s: "{}".format(s),  # noqa: UP032
        lambda s: "{0!r:>30}".format(s),  # noqa: UP030, UP032
        lambda s: str([s, {"k": s}, (s,)]),
        lambda s: repr({"anthropic": s}),
    ],
)
def test_every_formatting_path_is_redacted(secret, value, render):
    shown = render(secret)
    assert value not in shown
    assert "ProviderSecret(****)" in shown or shown.strip() == ""


def test_formatting_shows_the_redaction_text(secret):
    assert str(secret) == repr(secret) == f"{secret}" == REDACTED_TEXT == "ProviderSecret(****)"
    assert f"{secret:>24}" == "    ProviderSecret(****)"


def test_logging_a_secret_shows_only_the_redaction(secret, value, caplog):
    logger = logging.getLogger("swrly.tests.secret")
    with caplog.at_level(logging.DEBUG, logger="swrly.tests.secret"):
        logger.debug("key %s %r", secret, secret)
        logger.info({"anthropic": secret})
    assert value not in caplog.text
    assert caplog.text.count("ProviderSecret(****)") == 3


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickling_is_refused(secret, value, protocol):
    with pytest.raises(TypeError, match="cannot be pickled") as caught:
        pickle.dumps(secret, protocol=protocol)
    assert value not in str(caught.value)
    with pytest.raises(TypeError):
        pickle.dumps({"nested": [secret]}, protocol=protocol)


def test_state_hooks_refuse(secret):
    with pytest.raises(TypeError):
        secret.__getstate__()
    with pytest.raises(TypeError):
        secret.__reduce__()
    with pytest.raises(TypeError):
        vars(secret)  # no __dict__: __slots__ only


def test_copying_is_refused(secret):
    with pytest.raises(TypeError, match="cannot be copied"):
        copy.copy(secret)
    with pytest.raises(TypeError, match="cannot be copied"):
        copy.deepcopy(secret)
    with pytest.raises(TypeError):
        copy.deepcopy({"anthropic": secret})


@pytest.mark.parametrize("encoder", [None, DjangoJSONEncoder, DRFJSONEncoder])
def test_json_encoders_refuse(secret, value, encoder):
    for payload in (secret, {"anthropic": secret}, [secret]):
        with pytest.raises(TypeError) as caught:
            json.dumps(payload, cls=encoder)
        assert value not in str(caught.value)


def test_drf_renderer_refuses_and_a_char_field_shows_the_redaction(secret, value):
    with pytest.raises(TypeError):
        JSONRenderer().render({"anthropic": secret})
    assert serializers.CharField().to_representation(secret) == REDACTED_TEXT


def test_no_container_protocol(secret):
    assert not hasattr(secret, "__len__")
    assert not hasattr(secret, "__iter__")
    assert not hasattr(secret, "__getitem__")
    assert not hasattr(secret, "__dict__")
    assert not hasattr(secret, "tolist")
    with pytest.raises(TypeError):
        iter(secret)
    with pytest.raises(TypeError):
        "".join([secret])
    with pytest.raises(TypeError):
        secret + "suffix"


def test_equality_is_by_value_and_not_hashable(secret, value):
    twin = ProviderSecret(value)
    assert secret == twin
    assert secret != ProviderSecret(value + "x")
    assert secret != value  # only another ProviderSecret compares equal
    assert secret.__eq__(value) is NotImplemented
    with pytest.raises(TypeError):
        hash(secret)
    with pytest.raises(TypeError):
        {secret}  # noqa: B018
    twin.discard()
    assert secret != twin
    assert twin == twin


def test_truthy(secret):
    assert bool(secret) is True


def test_subclassing_is_refused():
    with pytest.raises(TypeError, match="cannot be subclassed"):

        class Leaky(ProviderSecret):
            def __str__(self):
                return self.reveal()


@pytest.mark.parametrize(("wrapped", "error"), [("", ValueError), (b"bytes", TypeError)])
def test_only_non_empty_strings_are_wrapped(wrapped, error):
    with pytest.raises(error):
        ProviderSecret(wrapped)


def test_discard_forgets_the_value(value):
    secret = ProviderSecret(value)
    assert value in live_secrets()
    secret.discard()
    secret.discard()  # idempotent
    assert secret.discarded
    assert value not in live_secrets()
    with pytest.raises(SecretDiscarded):
        secret.reveal()
    assert str(secret) == "ProviderSecret(discarded)"
    assert bool(secret) is True


def test_context_manager_discards_on_exit_even_on_error(value):
    with ProviderSecret(value) as secret:
        assert secret.reveal() == value
        assert value in live_secrets()
    assert secret.discarded
    assert value not in live_secrets()
    with pytest.raises(RuntimeError), ProviderSecret(value + "2") as failing:
        raise RuntimeError("boom")
    assert failing.discarded
    assert value + "2" not in live_secrets()


def test_a_collected_secret_leaves_the_live_set(value):
    secret = ProviderSecret(value)
    assert value in live_secrets()
    del secret
    gc.collect()
    assert value not in live_secrets()


def test_live_secrets_lists_every_held_value_once():
    values = ["canary-" + secrets.token_hex(8) for _ in range(3)]
    held = [ProviderSecret(v) for v in [*values, values[0]]]
    assert set(values) <= live_secrets()
    for secret in held:
        secret.discard()
    assert not set(values) & live_secrets()


def test_key_id_hex_is_carried_for_audit(value):
    with ProviderSecret(value, key_id_hex="0123456789abcdef") as secret:
        assert secret.key_id_hex == "0123456789abcdef"
        assert "0123456789abcdef" not in repr(secret)


def test_a_secret_collected_while_the_registry_is_locked_neither_deadlocks_nor_lingers():
    # The garbage collector runs finalizers inside any allocation, also one made while the
    # registry lock is held (seen: a log record redacted during httpx's debug logging).

    canary = "sk-ant-canary-finalizer-0123456789abcdef"
    done = threading.Event()

    def collect_inside_the_lock():
        held = ProviderSecret(canary)
        with secret_module._locked_registry():
            del held  # CPython runs the finalizer here, with the lock held by this thread
        done.set()

    thread = threading.Thread(target=collect_inside_the_lock, daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert done.is_set(), "releasing a secret inside the registry lock deadlocked"
    assert canary not in live_secrets()
