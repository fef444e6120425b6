"""Every public name of :mod:`gossip` exists and is documented."""

from __future__ import annotations

import inspect
import typing

import gossip


def test_all_names_exist() -> None:
    missing = [name for name in gossip.__all__ if not hasattr(gossip, name)]
    assert not missing, f"in __all__ but missing: {missing}"


def test_all_names_are_unique() -> None:
    assert len(gossip.__all__) == len(set(gossip.__all__))


def test_public_classes_and_functions_have_docstrings() -> None:
    undocumented = []
    for name in gossip.__all__:
        obj = getattr(gossip, name)
        if typing.get_origin(obj) is not None:
            continue  # a type alias (Callable[...]): documented by the string under it in source
        if inspect.isclass(obj) or inspect.isfunction(obj):
            if not (obj.__doc__ or "").strip():
                undocumented.append(name)
            for attr, member in vars(obj).items() if inspect.isclass(obj) else ():
                if attr.startswith("_") or not (inspect.isfunction(member) or isinstance(member, property)):
                    continue
                if not (member.__doc__ or "").strip():
                    undocumented.append(f"{name}.{attr}")
    assert not undocumented, f"no docstring: {undocumented}"


def test_cluster_api_is_complete() -> None:
    expected = """start stop join leave local_node local_metadata update_metadata nodes alive_nodes
    get_node get_node_by_id_string num_nodes num_alive_nodes num_suspect_nodes num_dead_nodes
    nodes_to_ids node_is_local calc_fan_out calc_payload_size get_candidates health_score stats
    handle_func handle_func_no_forward handle_func_with_reply unregister_message_type send
    send_excluding send_reliable send_reliable_excluding send_to send_to_reliable send_to_peers
    send_to_peers_reliable send_to_with_response handle_node_state_change_func
    handle_node_metadata_change_func handle_gossip_func remove_node_state_change_handler
    remove_node_metadata_change_handler remove_gossip_handler keyring""".split()
    missing = [m for m in expected if not hasattr(gossip.Cluster, m)]
    assert not missing
