"""The debian12-web contract: nginx baked, configured, valid, not running until boot."""


def test_nginx_installed(host):
    assert host.package("nginx-light").is_installed


def test_nginx_config_valid(host):
    result = host.run("nginx -t")
    assert result.rc == 0, result.stderr


def test_server_tokens_off(host):
    assert host.file("/etc/nginx/conf.d/golden-security.conf").contains("server_tokens off")


def test_default_site_headers(host):
    site = host.file("/etc/nginx/sites-available/default")
    assert site.contains("X-Frame-Options DENY")
    assert site.contains("server_name web.example.internal")
