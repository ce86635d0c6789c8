# frozen_string_literal: true

require "socket"

# A TCP forwarder a spec controls, to cut a client off from PostgreSQL or
# RabbitMQ without stopping them: while cut, every forwarded connection is
# closed and new ones are accepted and closed at once; `heal` forwards again.
class Forwarder
  attr_reader :port

  def initialize(host, port)
    @target = [host, port]
    @server = TCPServer.new("127.0.0.1", 0)
    @port = @server.addr[1]
    @up = true
    @sockets = []
    @lock = Mutex.new
    @acceptor = Thread.new { accept_loop }
  end

  # `url` (scheme://user@host:port/path) pointed at this forwarder.
  def through(url)
    url.sub(%r{@[^/]+}, "@127.0.0.1:#{port}")
  end

  def cut
    @lock.synchronize do
      @up = false
      @sockets.each { |s| s.close unless s.closed? }
      @sockets.clear
    end
  end

  def heal
    @lock.synchronize { @up = true }
  end

  def close
    cut
    @acceptor.kill
    @server.close
  end

  private

  def accept_loop
    loop do
      client = @server.accept
      @lock.synchronize do
        next client.close unless @up

        upstream = TCPSocket.new(*@target)
        @sockets.push(client, upstream)
        [[client, upstream], [upstream, client]].each { |from, to| Thread.new { pipe(from, to) } }
      end
    end
  end

  def pipe(from, to)
    IO.copy_stream(from, to)
  rescue IOError, SystemCallError
    nil
  ensure
    [from, to].each { |s| s.close unless s.closed? }
  end
end
