def test_marker(host):
    assert host.file("/etc/golden-marker").content_string == "baked\n"


def test_python(host):
    assert host.exists("python3")
