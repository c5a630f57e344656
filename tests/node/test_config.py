import pytest

from node.config import NodeConfig


def test_flags(tmp_path):
    cfg = NodeConfig.from_args(
        [
            "--id",
            "2",
            "--listen",
            "127.0.0.1:9402",
            "--data",
            str(tmp_path),
            "--peers",
            "1=127.0.0.1:9501,2=127.0.0.1:9502",
            "--fsync",
            "interval",
            "--advertise",
            "1=127.0.0.1:9401",
            "--peer-secret",
            "s" * 16,
            "--delay-tiers",
            "0.5,1,2",
        ]
    )
    assert (cfg.node_id, cfg.peers[1], cfg.fsync, cfg.delay_tiers_ms) == (
        2,
        "127.0.0.1:9501",
        "interval",
        [500, 1000, 2000],
    )
    assert cfg.peer_listen == "127.0.0.1:9502" and cfg.client_addr(2) == "127.0.0.1:9402"


def test_peer_secret_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TIDEMQ_PEER_SECRET", "from-the-environment")
    cfg = NodeConfig.from_args(
        [
            "--id",
            "1",
            "--listen",
            "127.0.0.1:9401",
            "--data",
            str(tmp_path),
            "--peers",
            "1=127.0.0.1:9501,2=127.0.0.1:9502",
            "--advertise",
            "2=127.0.0.1:9402",
        ]
    )
    assert cfg.peer_secret == "from-the-environment"


def test_thrifty_appends_are_on_unless_turned_off(tmp_path):
    base = ["--id", "1", "--listen", "127.0.0.1:9401", "--data", str(tmp_path)]
    assert NodeConfig.from_args(base).thrifty_appends is True
    assert NodeConfig.from_args([*base, "--no-thrifty-appends"]).thrifty_appends is False


def test_a_single_node_needs_no_peer_settings(tmp_path):
    cfg = NodeConfig.from_args(["--id", "1", "--listen", "127.0.0.1:9401", "--data", str(tmp_path)])
    assert cfg.peer_listen == "127.0.0.1:0" and cfg.peer_secret is None and cfg.client_addr(1) == "127.0.0.1:9401"


def test_toml_file_and_flags_win(tmp_path):
    path = tmp_path / "node.toml"
    path.write_text(
        'node_id = 1\nlisten = "127.0.0.1:9401"\ndata_dir = "d"\ntick_ms = 20\npeer_secret = "0123456789abcdef"\n'
        '[peers]\n1 = "127.0.0.1:9501"\n2 = "127.0.0.1:9502"\n[advertise]\n2 = "127.0.0.1:9402"\n'
    )
    cfg = NodeConfig.from_args(["--config", str(path), "--tick-ms", "30"])
    assert cfg.peers == {1: "127.0.0.1:9501", 2: "127.0.0.1:9502"} and cfg.tick_ms == 30


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--listen", "127.0.0.1:1", "--data", "d"], "missing --id"),
        (["--id", "1", "--listen", "nope", "--data", "d"], "HOST:PORT"),
        (
            [
                "--id",
                "1",
                "--listen",
                "127.0.0.1:1",
                "--data",
                "d",
                "--peers",
                "1=127.0.0.1:2",
                "--peer-listen",
                "127.0.0.1:3",
            ],
            "--peer-listen says",
        ),
        (["--id", "1", "--listen", "127.0.0.1:1", "--data", "d", "--peer-listen", "127.0.0.1:1"], "must differ"),
        (
            ["--id", "1", "--listen", "127.0.0.1:1", "--data", "d", "--peers", "1=127.0.0.1:2,2=127.0.0.1:3"],
            "--advertise must name",
        ),
        (
            [
                "--id",
                "1",
                "--listen",
                "127.0.0.1:1",
                "--data",
                "d",
                "--peers",
                "1=127.0.0.1:2,2=127.0.0.1:3",
                "--advertise",
                "2=127.0.0.1:4",
            ],
            "peer secret",
        ),
        (["--id", "1", "--listen", "127.0.0.1:1", "--data", "d", "--delay-tiers", "x"], "--delay-tiers"),
    ],
)
def test_bad_settings_exit_with_a_clear_message(argv, message, capsys):
    with pytest.raises(SystemExit):
        NodeConfig.from_args(argv)
    assert message in capsys.readouterr().err


def test_unknown_toml_key(tmp_path, capsys):
    path = tmp_path / "node.toml"
    path.write_text('node_id = 1\nlisten = "127.0.0.1:9401"\ndata_dir = "d"\nwhatever = 1\n')
    with pytest.raises(SystemExit):
        NodeConfig.from_args(["--config", str(path)])
    assert "whatever" in capsys.readouterr().err


def test_the_kafka_listener_is_off_unless_asked_and_advertises_itself_by_default(tmp_path):
    base = ["--id", "1", "--listen", "127.0.0.1:9401", "--data", str(tmp_path)]
    assert NodeConfig.from_args(base).kafka_listen == ""
    cfg = NodeConfig.from_args([*base, "--kafka-listen", "127.0.0.1:9092"])
    assert (cfg.kafka_listen, cfg.kafka_advertise) == ("127.0.0.1:9092", "127.0.0.1:9092")
    cfg = NodeConfig.from_args([*base, "--kafka-listen", "127.0.0.1:9092", "--kafka-advertise", "127.0.0.2:19092"])
    assert cfg.kafka_advertise == "127.0.0.2:19092"
    with pytest.raises(ValueError, match="--kafka-listen must differ"):
        NodeConfig(1, "127.0.0.1:9401", tmp_path, kafka_listen="127.0.0.1:9401")


def test_a_joining_node_needs_the_peer_secret_and_a_node_to_join_through(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("TIDEMQ_PEER_SECRET", raising=False)
    base = ["--id", "4", "--listen", "127.0.0.1:9404", "--peer-listen", "127.0.0.1:9504", "--data", str(tmp_path)]
    with pytest.raises(SystemExit):
        NodeConfig.from_args([*base, "--join", "127.0.0.1:9501"])
    assert "peer secret" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        NodeConfig.from_args([*base, "--join", "nowhere", "--peer-secret", "s" * 16])
    assert "nowhere" in capsys.readouterr().err
    cfg = NodeConfig.from_args([*base, "--join", "127.0.0.1:9501", "--peer-secret", "s" * 16])
    assert cfg.join == "127.0.0.1:9501" and cfg.peers == {4: "127.0.0.1:9504"}
