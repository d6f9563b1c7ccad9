//! Every command through a real `shiplogd` process: replies and error texts as Redis 7 gives
//! them, binary-safe values, pipelining, RESP3.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test"
)]

mod daemon;

use daemon::{Daemon, Raw};
use redis::Commands;

#[test]
fn string_commands_behave_like_redis() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    let mut raw = Raw::connect(daemon.addr);
    let cases: &[(&[&str], &str)] = &[
        (&["PING"], "+PONG\r\n"),
        (&["ping", "hi"], "$2\r\nhi\r\n"),
        (&["ECHO", "x y"], "$3\r\nx y\r\n"),
        (&["SELECT", "0"], "+OK\r\n"),
        (&["SELECT", "1"], "-ERR DB index is out of range\r\n"),
        (&["GET", "k"], "$-1\r\n"),
        (&["SET", "k", "v"], "+OK\r\n"),
        (&["SET", "k", "w", "NX"], "$-1\r\n"),
        (&["SET", "k", "w", "XX", "GET"], "$1\r\nv\r\n"),
        (&["SET", "new", "1", "XX"], "$-1\r\n"),
        (&["SET", "k", "x", "NX", "XX"], "-ERR syntax error\r\n"),
        (&["SET", "k", "x", "BOGUS"], "-ERR syntax error\r\n"),
        (&["SET", "k", "x", "KEEPTTL"], "+OK\r\n"),
        (
            &["SET", "k", "x", "KEEPTTL", "EX", "10"],
            "-ERR syntax error\r\n",
        ),
        (&["SCAN", "0", "COUNT", "-1"], "-ERR syntax error\r\n"),
        (
            &["SCAN", "0", "COUNT", "x"],
            "-ERR value is not an integer or out of range\r\n",
        ),
        (&["GET", "k"], "$1\r\nx\r\n"),
        (&["SETNX", "k", "y"], ":0\r\n"),
        (&["SETNX", "k2", "y"], ":1\r\n"),
        (&["GETSET", "k2", "z"], "$1\r\ny\r\n"),
        (&["GETDEL", "k2"], "$1\r\nz\r\n"),
        (&["GETDEL", "k2"], "$-1\r\n"),
        (&["EXISTS", "k", "k", "nope"], ":2\r\n"),
        (&["MSET", "a", "1", "b", "2"], "+OK\r\n"),
        (
            &["MSET", "a", "1", "b"],
            "-ERR wrong number of arguments for 'mset' command\r\n",
        ),
        (
            &["MGET", "a", "nope", "b"],
            "*3\r\n$1\r\n1\r\n$-1\r\n$1\r\n2\r\n",
        ),
        (&["MSETNX", "a", "9", "c", "3"], ":0\r\n"),
        (&["MSETNX", "c", "3", "d", "4"], ":1\r\n"),
        (&["INCR", "a"], ":2\r\n"),
        (&["INCRBY", "a", "-5"], ":-3\r\n"),
        (&["DECR", "a"], ":-4\r\n"),
        (&["DECRBY", "a", "6"], ":-10\r\n"),
        (
            &["INCR", "k"],
            "-ERR value is not an integer or out of range\r\n",
        ),
        (
            &["INCRBY", "a", "1x"],
            "-ERR value is not an integer or out of range\r\n",
        ),
        (&["SET", "max", "9223372036854775807"], "+OK\r\n"),
        (
            &["INCR", "max"],
            "-ERR increment or decrement would overflow\r\n",
        ),
        (&["APPEND", "ap", "Hello"], ":5\r\n"),
        (&["APPEND", "ap", " World"], ":11\r\n"),
        (&["STRLEN", "ap"], ":11\r\n"),
        (&["STRLEN", "nope"], ":0\r\n"),
        (&["GETRANGE", "ap", "0", "4"], "$5\r\nHello\r\n"),
        (&["GETRANGE", "ap", "-5", "-1"], "$5\r\nWorld\r\n"),
        (&["GETRANGE", "ap", "20", "30"], "$0\r\n\r\n"),
        (&["TYPE", "ap"], "+string\r\n"),
        (&["TYPE", "nope"], "+none\r\n"),
        (&["TTL", "ap"], ":-1\r\n"),
        (&["TTL", "nope"], ":-2\r\n"),
        (&["DEL", "ap", "nope", "c"], ":2\r\n"),
        (&["UNLINK", "d"], ":1\r\n"),
        (&["DBSIZE"], ":4\r\n"),
        (
            &["GET"],
            "-ERR wrong number of arguments for 'get' command\r\n",
        ),
        (
            &["NOSUCH", "a", "b"],
            "-ERR unknown command 'NOSUCH', with args beginning with: 'a' 'b' \r\n",
        ),
        (
            &["SET", "k", "v", "EX", "10"],
            "-ERR key expiry is not supported by shiplog: keys never expire (EX/PX/EXAT/PXAT, EXPIRE, SETEX)\r\n",
        ),
        (
            &["EXPIRE", "k", "10"],
            "-ERR key expiry is not supported by shiplog: keys never expire (EX/PX/EXAT/PXAT, EXPIRE, SETEX)\r\n",
        ),
        (
            &["AUTH", "pw"],
            "-ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?\r\n",
        ),
        (&["CLIENT", "SETNAME", "worker-1"], "+OK\r\n"),
        (&["CLIENT", "GETNAME"], "$8\r\nworker-1\r\n"),
        (
            &["CLIENT", "SETNAME", "a b"],
            "-ERR Client names cannot contain spaces, newlines or special characters.\r\n",
        ),
        (
            &["CLIENT", "NOPE"],
            "-ERR unknown subcommand 'NOPE'. Try CLIENT HELP.\r\n",
        ),
        (&["DEBUG", "SLEEP", "0"], "+OK\r\n"),
        (
            &["CONFIG", "GET", "appendfsync"],
            "*2\r\n$11\r\nappendfsync\r\n$6\r\nalways\r\n",
        ),
        (&["SAVE"], "+OK\r\n"),
        (&["ROLE"], "*3\r\n$6\r\nmaster\r\n"),
    ];
    for (args, expected) in cases {
        let got = raw.command(args);
        if args[0] == "ROLE" {
            assert!(got.starts_with(expected), "{args:?}: {got:?}");
            continue;
        }
        assert_eq!(&got, expected, "{args:?}");
    }
    let id = raw.command(&["CLIENT", "ID"]);
    assert!(id.starts_with(':'), "{id}");
    let lastsave: i64 = raw.command(&["LASTSAVE"])[1..].trim().parse().unwrap();
    assert!(lastsave > 1_700_000_000);
    assert!(
        raw.command(&["BGSAVE"])
            .starts_with("+Background saving started")
    );
    let count = raw.command(&["COMMAND", "COUNT"]);
    let count: usize = count[1..].trim().parse().unwrap();
    assert!(count >= 40, "{count}");
    assert!(raw.command(&["COMMAND", "DOCS", "get"]).contains("summary"));
    assert!(
        raw.command(&["COMMAND"])
            .starts_with(&format!("*{count}\r\n"))
    );
    let info = raw.command(&["INFO"]);
    for section in [
        "# Server",
        "# Clients",
        "# Persistence",
        "# Stats",
        "# Replication",
        "# Keyspace",
        "durability:sync",
        "db0:keys=4",
        "role:master",
    ] {
        assert!(info.contains(section), "INFO lacks {section}: {info}");
    }
    assert!(
        raw.command(&["INFO", "keyspace"])
            .contains("db0:keys=4,expires=0")
    );
    assert_eq!(raw.command(&["FLUSHALL"]), "+OK\r\n", "FLUSHALL answers OK");
    assert_eq!(raw.command(&["DBSIZE"]), ":0\r\n");
    assert_eq!(raw.command(&["QUIT"]), "+OK\r\n");
    assert!(raw.is_closed());
    daemon.stop();
}

#[test]
fn values_are_binary_safe_and_keys_scan_and_match() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    let mut con = daemon.client();
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    let big: Vec<u8> = (0..1 << 20).map(|i| (i * 7 % 251) as u8).collect();
    let _: () = con.set(&all_bytes[..], &all_bytes[..]).unwrap();
    let _: () = con.set("empty", b"").unwrap();
    let _: () = con.set("big", &big).unwrap();
    let got: Vec<u8> = con.get(&all_bytes[..]).unwrap();
    assert_eq!(got, all_bytes);
    let got: Vec<u8> = con.get("empty").unwrap();
    assert!(got.is_empty());
    let exists: bool = con.exists("empty").unwrap();
    assert!(exists, "an empty value is a value");
    let got: Vec<u8> = con.get("big").unwrap();
    assert_eq!(got, big);

    for i in 0..250 {
        let _: () = con.set(format!("user:{i:03}"), i).unwrap();
    }
    let mut keys: Vec<String> = con.keys("user:1[0-4]5").unwrap();
    keys.sort();
    assert_eq!(
        keys,
        ["user:105", "user:115", "user:125", "user:135", "user:145"]
    );
    // SCAN with a small COUNT, while keys are added and removed behind the cursor: every key
    // present for the whole scan comes back exactly once.
    let mut seen = Vec::new();
    let mut cursor = 0u64;
    let mut round = 0;
    loop {
        let (next, page): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("user:*")
            .arg("COUNT")
            .arg(7)
            .query(&mut con)
            .unwrap();
        seen.extend(page);
        round += 1;
        let _: () = con.set(format!("zzz:{round}"), 1).unwrap();
        let _: () = con.del(format!("zzz:{}", round - 1)).unwrap();
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let total = seen.len();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), total, "a key came back twice");
    assert_eq!(total, 250);
    let err = redis::cmd("SCAN")
        .arg(12345)
        .query::<(u64, Vec<String>)>(&mut con)
        .unwrap_err();
    assert!(err.to_string().contains("invalid cursor"), "{err}");
    daemon.stop();
}

#[test]
fn pipelines_get_every_reply_in_order_and_read_their_own_writes() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    let mut con = daemon.client();
    let mut pipe = redis::pipe();
    for i in 0..1000 {
        pipe.cmd("SET").arg(format!("p{i}")).arg(i).ignore();
        pipe.cmd("INCR").arg(format!("p{i}"));
        pipe.cmd("GET").arg(format!("p{i}"));
    }
    let replies: Vec<redis::Value> = pipe.query(&mut con).unwrap();
    assert_eq!(replies.len(), 2000);
    for (i, pair) in replies.chunks(2).enumerate() {
        let incremented: i64 = redis::from_redis_value(pair[0].clone()).unwrap();
        let read: i64 = redis::from_redis_value(pair[1].clone()).unwrap();
        assert_eq!(incremented, i as i64 + 1);
        assert_eq!(
            read,
            i as i64 + 1,
            "a GET after INCR in one pipeline sees it"
        );
    }
    // Inline commands (what a person types into telnet) work too.
    let mut raw = Raw::connect(daemon.addr);
    raw.send(b"SET inline \"two words\\x21\"\r\nGET inline\r\n");
    assert_eq!(raw.reply(), "+OK\r\n");
    assert_eq!(raw.reply(), "$10\r\ntwo words!\r\n");
    daemon.stop();
}

#[test]
fn hello_3_switches_to_resp3() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    let mut raw = Raw::connect(daemon.addr);
    let hello = raw.command(&["HELLO", "3"]);
    assert!(hello.starts_with("%7\r\n"), "{hello}");
    assert!(hello.contains("$5\r\nproto\r\n:3\r\n"), "{hello}");
    assert_eq!(raw.command(&["GET", "missing"]), "_\r\n");
    assert_eq!(
        raw.command(&["CONFIG", "GET", "databases"]),
        "%1\r\n$9\r\ndatabases\r\n$1\r\n1\r\n"
    );
    assert!(raw.command(&["INFO", "server"]).starts_with('='));
    assert_eq!(
        raw.command(&["HELLO", "4"]),
        "-NOPROTO unsupported protocol version\r\n"
    );
    let hello = raw.command(&["HELLO", "2"]);
    assert!(hello.starts_with("*14\r\n"), "{hello}");
    assert_eq!(raw.command(&["GET", "missing"]), "$-1\r\n");
    daemon.stop();
}

#[test]
fn a_long_pipeline_in_one_write_is_answered_whole() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    let mut raw = Raw::connect(daemon.addr);
    let mut request = Vec::new();
    for i in 0..3000 {
        let key = format!("k{i}");
        request.extend_from_slice(
            format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n$1\r\nv\r\n", key.len()).as_bytes(),
        );
    }
    request.extend_from_slice(b"*1\r\n$6\r\nDBSIZE\r\n");
    raw.send(&request);
    for i in 0..3000 {
        assert_eq!(raw.reply(), "+OK\r\n", "reply {i}");
    }
    assert_eq!(raw.reply(), ":3000\r\n");
    daemon.stop();
}

#[test]
fn a_reply_over_the_output_limit_is_refused_not_built() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &["--client-output-limit", "1000000"]);
    let mut raw = Raw::connect(daemon.addr);
    raw.send_command(&[b"SET", b"big", &vec![b'x'; 100_000]]);
    assert_eq!(raw.reply(), "+OK\r\n");
    let mut args: Vec<&[u8]> = vec![b"MGET"];
    args.extend(std::iter::repeat_n(&b"big"[..], 50));
    raw.send_command(&args);
    let reply = raw.reply();
    assert!(reply.starts_with("-ERR reply of about"), "{reply}");
    assert_eq!(raw.command(&["PING"]), "+PONG\r\n");
    daemon.stop();
}
