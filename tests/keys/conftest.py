from swrly.keys.keyring import generate_key


def new_key() -> str:
    return generate_key()
