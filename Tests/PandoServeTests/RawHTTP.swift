import Foundation

/// A deliberately small HTTP/1.1 client on raw sockets (no URLSession, no NIO client): it can
/// send malformed and oversized requests, and keep a thousand requests in flight at once from
/// one thread with poll(2). Every request says `Connection: close`; an answer is read to EOF.
struct HTTPAnswer {
    var status: Int
    var headers: [String: String]
    var body: Data
    var json: Any? { try? JSONSerialization.jsonObject(with: body) }
    var error: String? { (json as? [String: Any])?["error"] as? String }
}

enum RawHTTP {
    static func request(_ method: String, _ path: String, body: Data? = nil, contentType: String? = "application/json",
                        headers extra: [String: String] = [:]) -> Data {
        var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        if let contentType { head += "Content-Type: \(contentType)\r\n" }
        if let body { head += "Content-Length: \(body.count)\r\n" }
        for (k, v) in extra { head += "\(k): \(v)\r\n" }
        return Data((head + "\r\n").utf8) + (body ?? Data())
    }

    static func post(_ path: String, json: String) -> Data { request("POST", path, body: Data(json.utf8)) }

    /// Sends `bytes` on one connection and reads the answer (nil: no parsable answer, e.g. the
    /// server closed the connection first).
    static func send(port: Int, _ bytes: Data, timeout: TimeInterval = 60) -> HTTPAnswer? {
        exchange(port: port, [bytes], timeout: timeout)[0]
    }

    /// All `requests` at once, each on its own connection, driven by one poll loop.
    static func exchange(port: Int, _ requests: [Data], timeout: TimeInterval = 120) -> [HTTPAnswer?] {
        struct Connection { var fd: Int32; var out: [UInt8]; var sent = 0; var received: [UInt8] = []; var done = false }
        var connections: [Connection] = requests.map { request in
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = in_port_t(UInt16(port).bigEndian)
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            return Connection(fd: fd, out: Array(request))
        }
        let deadline = Date().addingTimeInterval(timeout)
        var buffer = [UInt8](repeating: 0, count: 64 << 10)
        while connections.contains(where: { !$0.done }), Date() < deadline {
            let open = connections.indices.filter { !connections[$0].done }
            var fds = open.map { i in
                pollfd(fd: connections[i].fd, events: Int16(POLLIN) | (connections[i].sent < connections[i].out.count ? Int16(POLLOUT) : 0), revents: 0)
            }
            guard poll(&fds, nfds_t(fds.count), 100) >= 0 else { continue }
            for (k, i) in open.enumerated() where fds[k].revents != 0 {
                if connections[i].sent < connections[i].out.count, fds[k].revents & Int16(POLLOUT) != 0 {
                    let n = connections[i].out.withUnsafeBytes { b in
                        Glibc.send(connections[i].fd, b.baseAddress! + connections[i].sent, b.count - connections[i].sent, Int32(MSG_NOSIGNAL))
                    }
                    if n > 0 { connections[i].sent += n } else if errno != EAGAIN && errno != EINTR {
                        connections[i].sent = connections[i].out.count  // the server stopped reading: read what it said
                    }
                }
                guard fds[k].revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 else { continue }
                let n = recv(connections[i].fd, &buffer, buffer.count, 0)
                if n > 0 {
                    connections[i].received += buffer[0..<n]
                } else if n == 0 || (errno != EAGAIN && errno != EINTR) {
                    connections[i].done = true
                    close(connections[i].fd)  // at once: the server keeps a connection until the client closes it
                }
            }
        }
        return connections.map { c in
            if !c.done { close(c.fd) }
            return parse(Data(c.received))
        }
    }

    static func parse(_ data: Data) -> HTTPAnswer? {
        guard let split = data.range(of: Data("\r\n\r\n".utf8)) else { return nil }
        let head = String(decoding: data[..<split.lowerBound], as: UTF8.self).components(separatedBy: "\r\n")
        let statusLine = head[0].split(separator: " ")
        guard statusLine.count >= 2, let status = Int(statusLine[1]) else { return nil }
        var headers: [String: String] = [:]
        for line in head.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        var body = Data(data[split.upperBound...])
        if let length = headers["content-length"].flatMap(Int.init) {
            guard body.count >= length else { return nil }
            body = body.prefix(length)
        }
        return HTTPAnswer(status: status, headers: headers, body: body)
    }
}
