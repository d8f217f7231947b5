from forensics.credentials import mask_secrets, mask_uri


def test_uri_passwords_are_masked():
    assert mask_uri("mongodb://admin:s3cr3t@db:27017/chat4all?authSource=admin") == \
        "mongodb://admin:***@db:27017/chat4all?authSource=admin"
    assert mask_uri("redis://:hunter2@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert mask_uri("host=db user=chat4all password=hunter2 dbname=chat4all") == \
        "host=db user=chat4all password=*** dbname=chat4all"
    assert mask_uri("http://jaeger:16686/api?token=abc&x=1") == "http://jaeger:16686/api?token=***&x=1"


def test_nested_structures_are_masked():
    masked = mask_secrets({"mongodb": {"uri": "mongodb://u:pw@h/db", "password": "pw", "port": 27017},
                           "list": ["postgresql://u:pw@h/db"]})
    assert "pw" not in repr(masked).replace("***", "")
    assert masked["mongodb"]["port"] == 27017
