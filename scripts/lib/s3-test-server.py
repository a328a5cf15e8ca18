#!/usr/bin/env python3
"""Loopback S3 servers for kho's tests.

  s3-test-server.py moto --ready FILE [--bucket NAME]...
      Runs moto's S3 server (pip package moto[server]) on a free port of 127.0.0.1. Before it
      reports ready it creates the buckets and two IAM users with access keys: `kho` (allowed
      every S3 action) and `reader` (allowed s3:GetObject only). Then it turns moto's request
      authentication on, so that every request must carry a valid Signature Version 4 by a known
      key: a wrong secret gets 403 SignatureDoesNotMatch, an unknown key 403 InvalidAccessKeyId.
      FILE receives {"port": P, "keys": {"kho": [ID, SECRET], "reader": [ID, SECRET]}}.
      (One fix to moto's signature check is applied first: see canonical_query_like_aws.)

  s3-test-server.py proxy --listen PORT --target PORT [--ready FILE]
                          [--stall-first N] [--stall-seconds S]
      A TCP proxy on 127.0.0.1:PORT to 127.0.0.1:TARGET. Killing it and starting it again is
      how the tests make "the S3 server" vanish and come back with its data (moto keeps its state
      in memory, behind the proxy). With --stall-first N, the first N connections are accepted
      and read but answered only after S seconds (a slow server whose requests time out).
      With --exit-after-bytes N, it exits by itself once N bytes went to the server: the server
      dies in the middle of an upload, at a point that does not depend on timing.

  s3-test-server.py tls --ready FILE
      An HTTPS server on a free port of 127.0.0.1 with a fresh self-signed certificate (one no
      trust store knows), answering 200 to everything: for the "certificate not trusted" test.

  s3-test-server.py tls-proxy --target PORT --cert CERT --key KEY --ready FILE [--count FILE]
      A TLS front on a free port of 127.0.0.1 (certificate chain CERT, private key KEY, both PEM)
      that passes the decrypted bytes on to 127.0.0.1:TARGET (moto): an HTTPS S3 server whose
      certificate a private CA signed. With --count, FILE holds the number of TCP connections
      accepted so far (a client that retries shows as several).

  s3-test-server.py answer --status N --ready FILE [--code CODE] [--location URL] [--count FILE]
      An HTTP server on a free port of 127.0.0.1 that answers every request with status N and,
      with --code, an S3 error body <Error><Code>CODE</Code>…</Error> (and a Location header with
      --location): a redirect, a server error or a throttling answer, as a test needs. With
      --count, FILE holds the number of requests answered so far.

  s3-test-server.py forward-proxy --ready FILE [--count FILE] [--resolve NAME=ADDRESS]...
      An HTTP forward proxy (what http_proxy / https_proxy name) on a free port of 127.0.0.1.
      `CONNECT host:port` (https through a proxy) is answered `200 Connection established` and
      the bytes are passed both ways; an absolute-form request (`GET http://host:port/path`,
      plain http through a proxy) is sent on to host:port in origin form (`GET /path`) with its
      headers and body, and the answer passed back. Requests are read one by one, so a
      keep-alive connection carries several (each rewritten); a connection to a server is kept
      while the client's requests go to that same server. A server that cannot be reached gets
      502. With --resolve, NAME is reached at ADDRESS instead of being looked up: a host name
      that only the proxy knows, so a request that gets through did go through the proxy.
      With --count, FILE holds the number of requests and tunnels handled so far.

  s3-test-server.py delete --port P --key-id ID --secret SECRET --bucket B --prefix PREFIX
      Removes the first object under PREFIX (an object deleted behind kho's back) and prints its key.

Both exit when the process that started them goes away (they watch their parent's pid), so a
test run that dies leaves no server behind.
"""
import argparse
import asyncio
import json
import os
import signal
import sys
import threading
import time


def die_with_parent():
    # Not PR_SET_PDEATHSIG: it fires when the parent's *thread* ends, and test runners start
    # helpers from pool threads that come and go.
    parent = os.getppid()

    def watch():
        while True:
            if os.getppid() != parent:
                os._exit(0)
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True).start()


def write_ready(path, content):
    temporary = path + ".tmp"
    with open(temporary, "w") as f:
        json.dump(content, f)
    os.rename(temporary, path)


def canonical_query_like_aws():
    """moto checks signatures against the query string as werkzeug hands it over, with `%2F`
    already decoded to `/`: every signed request with a `/` in a query value (ListObjectsV2 with
    prefix=a/b/, from boto3 too) then fails with SignatureDoesNotMatch. AWS decodes the query and
    encodes it again the canonical way before it checks; make moto do the same."""
    from urllib.parse import quote, unquote
    from moto.iam import access_control

    original = access_control.IAMRequestBase._create_aws_request

    def create_aws_request(self):
        request = original(self)
        path, _, query = request.url.partition("?")
        if query:
            pairs = []
            for pair in query.split("&"):
                key, _, value = pair.partition("=")
                pairs.append(quote(unquote(key), safe="-_.~") + "=" + quote(unquote(value), safe="-_.~"))
            request.url = path + "?" + "&".join(pairs)
        return request

    access_control.IAMRequestBase._create_aws_request = create_aws_request


def run_moto(args):
    from moto.server import ThreadedMotoServer
    import boto3
    import moto.settings
    from moto.core.authorization import ActionAuthenticatorMixin

    canonical_query_like_aws()
    # moto keeps an object in memory only up to 5 MiB by default and moves anything larger (every
    # 16 MiB pack) to a temporary file on disk, then reads the whole file back for each ranged
    # GET: keep objects up to 64 MiB in memory, as an S3 server's own cache would.
    os.environ.setdefault("MOTO_S3_DEFAULT_KEY_BUFFER_SIZE", str(64 << 20))

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    port = server.get_host_and_port()[1]
    endpoint = f"http://127.0.0.1:{port}"
    setup = dict(endpoint_url=endpoint, region_name="us-east-1",
                 aws_access_key_id="setup", aws_secret_access_key="setup")
    iam = boto3.client("iam", **setup)
    s3 = boto3.client("s3", **setup)
    keys = {}
    policies = {"kho": ["s3:*"], "reader": ["s3:GetObject"]}
    for user, actions in policies.items():
        iam.create_user(UserName=user)
        iam.put_user_policy(UserName=user, PolicyName="s3", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}],
        }))
        key = iam.create_access_key(UserName=user)["AccessKey"]
        keys[user] = [key["AccessKeyId"], key["SecretAccessKey"]]
    for bucket in args.bucket:
        s3.create_bucket(Bucket=bucket)
    # From now on every request is authenticated and authorized.
    moto.settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    ActionAuthenticatorMixin.request_count = 0
    write_ready(args.ready, {"port": port, "keys": keys})
    while True:
        time.sleep(3600)


async def pipe(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def run_proxy(args):
    stalls = {"left": args.stall_first}
    sent = {"bytes": 0}

    async def upstream(reader, writer):
        # Client to server, counting bytes for --exit-after-bytes.
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if args.exit_after_bytes and sent["bytes"] + len(data) >= args.exit_after_bytes:
                    os._exit(0)
                sent["bytes"] += len(data)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            try:
                writer.close()
            except Exception:
                pass

    async def handle(client_reader, client_writer):
        stall = stalls["left"] > 0
        if stall:
            stalls["left"] -= 1
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", args.target)
        except OSError:
            client_writer.close()
            return
        if stall:
            # Read the request but hold it: the client sees a server that does not answer.
            await asyncio.sleep(args.stall_seconds)
        await asyncio.gather(upstream(client_reader, server_writer), pipe(server_reader, client_writer))

    server = await asyncio.start_server(handle, "127.0.0.1", args.listen, reuse_address=True)
    if args.ready:
        write_ready(args.ready, {"port": args.listen})
    async with server:
        await server.serve_forever()


def run_tls(args):
    import datetime
    import http.server
    import socketserver
    import ssl
    import tempfile
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
                   .sign(key, hashes.SHA256()))
    folder = tempfile.mkdtemp()
    with open(folder + "/cert.pem", "wb") as f:
        f.write(certificate.public_bytes(serialization.Encoding.PEM))
    with open(folder + "/key.pem", "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))

    class Handler(http.server.BaseHTTPRequestHandler):
        def answer(self):
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
        do_GET = do_PUT = do_HEAD = do_DELETE = answer

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True

    server = Server(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder + "/cert.pem", folder + "/key.pem")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    write_ready(args.ready, {"port": server.server_address[1]})
    server.serve_forever()


async def run_tls_proxy(args):
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    accepted = {"count": 0}

    def count_connection():
        accepted["count"] += 1
        if args.count:
            write_ready(args.count, accepted["count"])

    async def handle(client_reader, client_writer):
        # Counted when the TCP connection is accepted, before (and whether or not) the handshake succeeds.
        count_connection()
        try:
            await client_writer.start_tls(context)
        except (ssl.SSLError, ConnectionError, OSError):
            # The client refused the certificate (or went away): nothing to pass on.
            client_writer.close()
            return
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", args.target)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    if args.count:
        write_ready(args.count, 0)
    write_ready(args.ready, {"port": server.sockets[0].getsockname()[1]})
    async with server:
        await server.serve_forever()


async def run_forward_proxy(args):
    resolve = {}
    for entry in args.resolve:
        name, _, address = entry.partition("=")
        resolve[name.lower()] = address
    handled = {"count": 0}

    def count_request():
        handled["count"] += 1
        if args.count:
            write_ready(args.count, handled["count"])

    def host_and_port(authority, default_port):
        # host, host:port, [v6] or [v6]:port
        if authority.startswith("["):
            host, _, rest = authority[1:].partition("]")
            return host, int(rest[1:]) if rest.startswith(":") else default_port
        host, colon, port = authority.rpartition(":")
        return (host, int(port)) if colon else (authority, default_port)

    async def connect(host, port):
        return await asyncio.open_connection(resolve.get(host.lower(), host), port, limit=1 << 20)

    async def read_head(reader):
        """The start line and headers of the next message, or None when the peer closed between messages."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as error:
            if error.partial.strip():
                raise ConnectionError("message head cut short")
            return None
        lines = head[:-4].decode("latin-1").split("\r\n")
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
        return lines[0], headers

    def header(headers, name):
        values = [value for key, value in headers if key.lower() == name]
        return ", ".join(values) if values else None

    def head_bytes(start_line, headers):
        return (start_line + "\r\n" + "".join(f"{name}: {value}\r\n" for name, value in headers) + "\r\n").encode("latin-1")

    async def copy_exactly(reader, writer, count):
        while count:
            data = await reader.read(min(count, 65536))
            if not data:
                raise ConnectionError("body cut short")
            writer.write(data)
            await writer.drain()
            count -= len(data)

    async def relay_body(reader, writer, headers, until_close):
        """Passes on the body that follows a head; returns False when it ended with the connection."""
        if "chunked" in (header(headers, "transfer-encoding") or "").lower():
            while True:
                line = await reader.readuntil(b"\r\n")
                writer.write(line)
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    while True:  # trailers, up to the empty line
                        line = await reader.readuntil(b"\r\n")
                        writer.write(line)
                        if line == b"\r\n":
                            break
                    break
                await copy_exactly(reader, writer, size + 2)
        elif header(headers, "content-length") is not None:
            await copy_exactly(reader, writer, int(header(headers, "content-length")))
        elif until_close:
            await pipe(reader, writer)  # to the end of the connection; the caller stops reading
            return False
        await writer.drain()
        return True

    def wants_close(version, headers):
        tokens = [token.strip().lower() for token in (header(headers, "connection") or "").split(",")]
        return "close" in tokens or (version == "HTTP/1.0" and "keep-alive" not in tokens)

    async def tunnel(target, client_reader, client_writer):
        host, port = host_and_port(target, 443)
        try:
            server_reader, server_writer = await connect(host, port)
        except OSError:
            client_writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await client_writer.drain()
            return
        client_writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await client_writer.drain()
        await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer))

    async def handle(client_reader, client_writer):
        server = None  # ((host, port), reader, writer): kept while requests go to the same server
        try:
            while True:
                head = await read_head(client_reader)
                if head is None:
                    break
                request_line, headers = head
                method, target, version = request_line.split(" ", 2)
                count_request()
                if method == "CONNECT":
                    await tunnel(target, client_reader, client_writer)
                    return
                if not target.lower().startswith("http://"):
                    client_writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    break
                rest = target[len("http://"):]
                slash = min([i for i in (rest.find("/"), rest.find("?")) if i >= 0], default=len(rest))
                address = host_and_port(rest[:slash], 80)
                path = rest[slash:] or "/"
                if path.startswith("?"):
                    path = "/" + path
                if server is not None and (server[0] != address or server[2].is_closing()):
                    server[2].close()
                    server = None
                if server is None:
                    try:
                        server = (address,) + await connect(*address)
                    except OSError:
                        client_writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        break
                _, server_reader, server_writer = server
                forwarded = [(name, value) for name, value in headers if name.lower() not in ("proxy-connection", "proxy-authorization")]
                server_writer.write(head_bytes(f"{method} {path} {version}", forwarded))
                await relay_body(client_reader, server_writer, headers, until_close=False)
                while True:
                    answer = await read_head(server_reader)
                    if answer is None:
                        raise ConnectionError("the server closed without answering")
                    status_line, answer_headers = answer
                    status = int(status_line.split(" ", 2)[1])
                    client_writer.write(head_bytes(status_line, answer_headers))
                    if status >= 200 or status == 101:
                        break
                    await client_writer.drain()  # 1xx: the real answer follows
                if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
                    await client_writer.drain()
                    kept = True
                else:
                    kept = await relay_body(server_reader, client_writer, answer_headers, until_close=True)
                if not kept or wants_close(status_line.split(" ", 1)[0], answer_headers):
                    server_writer.close()
                    server = None
                    if not kept:
                        break  # an answer that ended with the connection: the client reads until close
                if wants_close(version, headers):
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, OSError):
            pass
        finally:
            if server is not None:
                server[2].close()
            try:
                client_writer.close()
            except Exception:
                pass

    proxy = await asyncio.start_server(handle, "127.0.0.1", 0, limit=1 << 20)
    if args.count:
        write_ready(args.count, 0)
    write_ready(args.ready, {"port": proxy.sockets[0].getsockname()[1]})
    async with proxy:
        await proxy.serve_forever()


def run_answer(args):
    import http.server

    answered = {"count": 0}
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def answer(self):
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            with lock:
                answered["count"] += 1
                if args.count:
                    write_ready(args.count, answered["count"])
            body = b""
            if args.code:
                body = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{args.code}</Code>"
                        f"<Message>answered by s3-test-server.py</Message>"
                        + (f"<Endpoint>{args.location}</Endpoint>" if args.location else "") + "</Error>").encode()
            self.send_response(args.status)
            if args.location:
                self.send_header("Location", args.location)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = answer

        def log_message(self, *_):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if args.count:
        write_ready(args.count, 0)
    write_ready(args.ready, {"port": server.server_address[1]})
    server.serve_forever()


def run_delete(args):
    import boto3
    s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{args.port}", region_name="us-east-1",
                      aws_access_key_id=args.key_id, aws_secret_access_key=args.secret)
    listed = s3.list_objects_v2(Bucket=args.bucket, Prefix=args.prefix).get("Contents", [])
    if not listed:
        sys.exit(f"nothing under {args.prefix}")
    key = sorted(item["Key"] for item in listed)[0]
    s3.delete_object(Bucket=args.bucket, Key=key)
    print(key)


def main():
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    moto_command = commands.add_parser("moto")
    moto_command.add_argument("--ready", required=True)
    moto_command.add_argument("--bucket", action="append", default=[])
    proxy_command = commands.add_parser("proxy")
    proxy_command.add_argument("--listen", type=int, required=True)
    proxy_command.add_argument("--target", type=int, required=True)
    proxy_command.add_argument("--ready")
    proxy_command.add_argument("--stall-first", type=int, default=0)
    proxy_command.add_argument("--stall-seconds", type=float, default=0)
    proxy_command.add_argument("--exit-after-bytes", type=int, default=0)
    tls_command = commands.add_parser("tls")
    tls_command.add_argument("--ready", required=True)
    tls_proxy_command = commands.add_parser("tls-proxy")
    tls_proxy_command.add_argument("--target", type=int, required=True)
    tls_proxy_command.add_argument("--cert", required=True)
    tls_proxy_command.add_argument("--key", required=True)
    tls_proxy_command.add_argument("--ready", required=True)
    tls_proxy_command.add_argument("--count")
    answer_command = commands.add_parser("answer")
    answer_command.add_argument("--status", type=int, required=True)
    answer_command.add_argument("--ready", required=True)
    answer_command.add_argument("--code")
    answer_command.add_argument("--location")
    answer_command.add_argument("--count")
    forward_proxy_command = commands.add_parser("forward-proxy")
    forward_proxy_command.add_argument("--ready", required=True)
    forward_proxy_command.add_argument("--count")
    forward_proxy_command.add_argument("--resolve", action="append", default=[])
    delete_command = commands.add_parser("delete")
    for name in ["--port", "--key-id", "--secret", "--bucket", "--prefix"]:
        delete_command.add_argument(name, required=True)
    args = parser.parse_args()
    if args.command == "delete":
        return run_delete(args)
    # A child inherits the signal mask of the thread that started it, and the threads of a Swift
    # test runner block SIGTERM: unblock it, or `terminate()` would never end this process.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    die_with_parent()
    if args.command == "moto":
        run_moto(args)
    elif args.command == "tls":
        run_tls(args)
    elif args.command == "tls-proxy":
        asyncio.run(run_tls_proxy(args))
    elif args.command == "answer":
        run_answer(args)
    elif args.command == "forward-proxy":
        asyncio.run(run_forward_proxy(args))
    else:
        asyncio.run(run_proxy(args))


if __name__ == "__main__":
    sys.exit(main())
