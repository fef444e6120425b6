"""hashicorp/memberlist's wire, as a second profile under the same protocol core and engine.

``Config(wire_protocol="memberlist")`` makes a node speak memberlist's protocol (versions 2 to
5) byte for byte, so that it joins Go memberlist programs and Serf agents as a member:

* :mod:`.codec`: the messages (msgpack maps keyed by the Go field names, raw strings),
  compound messages, the CRC prefix, compression (:mod:`.lzw`, Go's ``compress/lzw``);
* :mod:`.security`: AES-GCM versions 0 and 1, the keyring, the label header;
* :mod:`.identity`: member names to node ids (injectively), versions, ``Meta``;
* :mod:`.profile`: the core's messages to and from memberlist's (the engine's codec);
* :mod:`.transport`: UDP datagrams and one-message TCP streams on one port;
* :mod:`.serf`: Serf's tags, join and leave intents and user events (``Config.serf``).

docs/memberlist-wire.md says what works on each wire.
"""
