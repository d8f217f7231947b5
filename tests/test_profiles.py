import pytest
import yaml

from forensics.errors import ProfileError
from forensics.profiles import available_profiles, load_profile


def test_shipped_profiles():
    assert {"runbook", "chat4all-v2"} <= set(available_profiles())


def test_runbook_profile_uses_runbook_names():
    p = load_profile()
    assert p.name == "runbook"
    assert p.kafka.message_events.name == "message-events" and p.kafka.message_events.partitions == 10
    assert [t.name for t in p.kafka.outbound] == ["whatsapp-outbound", "telegram-outbound", "instagram-outbound"]
    assert p.kafka.dlq_for("WHATSAPP").name == "whatsapp-outbound-dlq"
    assert p.kafka.router_group == "router-service-group"
    assert p.postgres.users_id_column == "user_id"


def test_deployed_profile_uses_code_names():
    p = load_profile("chat4all-v2")
    assert p.kafka.message_events.name == "chat-events"
    assert p.kafka.status_updates.name == "status-updates"
    assert p.kafka.dlq_for("TELEGRAM").name == "chat-events-dlq"
    assert p.kafka.router_group == "router-service"
    assert p.postgres.users_id_column == "id"
    assert p.mongo.message_fields["error_message"][0] == "metadata.error_message"


def test_profile_from_yaml_file(tmp_path):
    data = yaml.safe_load(open(load_profile().path or "/dev/null")) if load_profile().path else None
    assert data is None  # shipped profiles have no path
    from importlib import resources
    text = resources.files("forensics.profiles").joinpath("runbook.yaml").read_text()
    custom = yaml.safe_load(text)
    custom["name"] = "site-a"
    custom["kafka"]["message_events"]["name"] = "site-a.message-events"
    path = tmp_path / "site-a.yaml"
    path.write_text(yaml.safe_dump(custom))
    p = load_profile(str(path))
    assert p.name == "site-a" and p.kafka.message_events.name == "site-a.message-events"
    assert p.path == str(path)


def test_unknown_profile_names_known_ones():
    with pytest.raises(ProfileError, match="runbook"):
        load_profile("no-such-profile")


def test_profile_of_wrong_shape_names_the_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nmongo: {database: chat4all}\nkafka: {}\npostgres: {}\nredis: {}\nservices: {}\n")
    with pytest.raises(ProfileError, match="collections"):
        load_profile(str(path))
    path.write_text(": not yaml : [")
    with pytest.raises(ProfileError, match="not valid YAML"):
        load_profile(str(path))
