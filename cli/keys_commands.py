"""``streamgale keys``: the CURVE keys of a cluster, its users and its daemons (docs/security.md)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from streamgale.security import ROLES, KeyFileError, KeyStore
from streamgale.security.keys import fingerprint, read_public

from .main import State, cli, fail

DIR_HELP = "Keys directory (default: security.keys_dir)."


@contextmanager
def _key_errors() -> Iterator[None]:
    """A key file missing, malformed or unsafe: one error line, exit 1."""
    try:
        yield
    except KeyFileError as e:
        fail(str(e), code=1)


def _store(state: State, directory: str | None) -> KeyStore:
    return KeyStore(directory or state.base_config()["security.keys_dir"])


@cli.group()
def keys() -> None:
    """Create, authorize, rotate and revoke keys.

    A daemon node's keys directory holds the cluster key pair (cluster.key,
    cluster.key_secret), the node's own pair, and authorized/ (the public key
    and role of everyone allowed in). A user's holds the user's pair and a
    copy of cluster.key. Daemons rescan authorized/ every second: changes
    take effect without a restart.
    """


@keys.command("init")
@click.option("--dir", "directory", default=None, help=DIR_HELP)
@click.option("--admin", default="admin", show_default=True, help="Name of the first admin key to create.")
@click.option("--daemon", "daemon_name", default="daemon", show_default=True,
              help="Name of the key the daemons of this node authenticate with.")
@click.pass_obj
def keys_init(state: State, directory: str | None, admin: str, daemon_name: str) -> None:
    """Start a secured cluster: the cluster key pair, an admin key and a daemon key, all authorized.

    Copy the whole directory to every daemon node; give users their own key
    (`keys create NAME --role ROLE`) and cluster.key.
    """
    store = _store(state, directory)
    with _key_errors():
        written = store.init()
        made = []
        for name, role in ((admin, "admin"), (daemon_name, "daemon")):
            if not (store.dir / f"{name}.key_secret").exists():
                store.create(name, role)
                made.append(f"{name} ({role})")
    if not written and not made:
        click.echo(f"{store.dir} already holds a cluster key; nothing to do")
        return
    click.echo(f"keys in {store.dir}: " + ", ".join((["cluster key pair"] if written else []) + made))


@keys.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), default=None,
              help="Also authorize the new key here with this role.")
@click.option("--dir", "directory", default=None, help=DIR_HELP)
@click.pass_obj
def keys_create(state: State, name: str, role: str | None, directory: str | None) -> None:
    """Create the key pair NAME (NAME.key to share, NAME.key_secret to keep)."""
    store = _store(state, directory)
    with _key_errors():
        pair = store.create(name, role)
    click.echo(f"created {store.dir / (name + '.key_secret')} (public key {fingerprint(pair.public)}...)"
               + (f", authorized as {role}" if role else ""))


@keys.command("authorize")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True,
              help="What NAME may do (docs/security.md, \"Roles and owners\").")
@click.option("--public-key", type=click.Path(dir_okay=False, exists=True), default=None,
              help="The user's NAME.key (default: NAME.key in the keys directory).")
@click.option("--dir", "directory", default=None, help=DIR_HELP)
@click.pass_obj
def keys_authorize(state: State, name: str, role: str, public_key: str | None, directory: str | None) -> None:
    """Let NAME connect with ROLE (replaces its previous role or key)."""
    store = _store(state, directory)
    with _key_errors():
        public = read_public(Path(public_key))[0] if public_key else None
        path = store.authorize(name, role, public)
    click.echo(f"authorized {name} as {role} ({path})")


@keys.command("revoke")
@click.argument("name")
@click.option("--dir", "directory", default=None, help=DIR_HELP)
@click.pass_obj
def keys_revoke(state: State, name: str, directory: str | None) -> None:
    """Refuse NAME from now on (new connections, and requests on open ones)."""
    store = _store(state, directory)
    with _key_errors():
        store.revoke(name)
    click.echo(f"revoked {name}")


@keys.command("rotate")
@click.argument("name")
@click.option("--dir", "directory", default=None, help=DIR_HELP)
@click.pass_obj
def keys_rotate(state: State, name: str, directory: str | None) -> None:
    """Replace NAME's key pair; where NAME is authorized, only the new key is accepted from now on."""
    store = _store(state, directory)
    with _key_errors():
        pair = store.rotate(name)
    click.echo(f"rotated {name}: new public key {fingerprint(pair.public)}...")


@keys.command("list")
@click.option("--dir", "directory", default=None, help=DIR_HELP)
@click.pass_obj
def keys_list(state: State, directory: str | None) -> None:
    """The authorized keys: name, role and the start of the public key."""
    store = _store(state, directory)
    authorized = sorted(store.authorized().items(), key=lambda kv: kv[1].name)
    if not authorized:
        click.echo(f"no authorized keys in {store.authorized_dir}")
        return
    click.echo(f"{'NAME':<24} {'ROLE':<8} PUBLIC KEY")
    for public, principal in authorized:
        click.echo(f"{principal.name:<24} {principal.role:<8} {fingerprint(public)}...")
